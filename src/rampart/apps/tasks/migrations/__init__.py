"""The demo app's migrations: its own chain (branch label `tasks`), applied after Rampart's."""
