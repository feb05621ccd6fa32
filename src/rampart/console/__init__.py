"""The web console at `/console`: server-rendered pages for the people who run a Rampart service.

Generic over every declared resource, and built on the framework's own pieces: its pages are browser
routes (`Route(..., browser=True)`) signed in by a server-side session cookie, and everything they change
goes through the resource managers (validation, policies, hooks, events with the admin as actor). See
docs/guide/console.md and docs/decisions/0023-console-ui-stack.md.
"""

PREFIX = "/console"
# Where a one-time sign-in link points (`rampart login-link` prints it under RAMPART_PUBLIC_URL).
LINK_PATH = f"{PREFIX}/sign-in/link"
