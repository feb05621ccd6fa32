"""The `rampart` command: serve, migrate, makemigrations, config, secrets, users, tokens, keys, events."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import click
import orjson
from pydantic import SecretStr, ValidationError

from rampart.config import Settings

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        ]
        raise click.ClickException("invalid configuration:\n" + "\n".join(lines)) from None


def _database(settings: Settings) -> tuple[Settings, Any]:
    """Settings with a database URL: the configured one, or a started embedded server (returned to stop).

    Says on stderr which database the command uses: a command meant for another one (RAMPART_DATABASE_URL
    unset in this shell) would otherwise quietly work on the embedded database.
    """
    if settings.database_url is not None:
        click.echo(f"rampart: database {_source(settings.database_url, 'RAMPART_DATABASE_URL')}", err=True)
        direct = settings.database_direct_url
        if direct is not None and direct.get_secret_value() != settings.database_url.get_secret_value():
            where = _source(direct, "RAMPART_DATABASE_DIRECT_URL")
            click.echo(f"rampart: direct connection (migrations, LISTEN) {where}", err=True)
        return settings, None
    if settings.is_production:
        # The embedded server trusts anyone who can open its socket folder: a development convenience.
        raise click.ClickException(
            "RAMPART_DATABASE_URL must be set in production (the embedded database is for development)"
        )
    from rampart.db.embedded import EmbeddedPostgres, default_data_dir

    data_dir = Path(settings.data_dir) if settings.data_dir else default_data_dir(project_dir=Path.cwd())
    try:
        server = EmbeddedPostgres(data_dir)
        dsn = server.start()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"rampart: database: the embedded PostgreSQL in {data_dir} (RAMPART_DATABASE_URL is not set)",
        err=True,
    )
    os.environ["RAMPART_DATABASE_URL"] = dsn  # worker processes inherit it
    return settings.model_copy(update={"database_url": SecretStr(dsn)}), server


def _source(url: SecretStr, name: str) -> str:
    """`url`, its password masked, and where it was set."""
    from rampart.ops.logging import redact

    origin = name if name in os.environ else f"{name} in .env"
    return f"{redact(url.get_secret_value())} (from {origin})"


@contextlib.contextmanager
def _database_settings() -> Iterator[Settings]:
    """`_database`'s settings for the block; the embedded server, when one was started, let go after it."""
    settings, server = _database(_settings())
    try:
        yield settings
    finally:
        if server is not None:
            server.stop()


def _run(task: Callable[..., Coroutine[Any, Any, T]], **kwargs: Any) -> T:
    """`task(settings, **kwargs)` run on the database."""
    with _database_settings() as settings:
        return asyncio.run(task(settings, **kwargs))


def _database_failure(exc: BaseException) -> str | None:
    """The root cause when `exc` means the database could not be reached or used, else None."""
    import asyncpg

    from rampart.errors import ServiceUnavailable

    found: str | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError | asyncpg.PostgresError | asyncpg.InterfaceError | ServiceUnavailable):
            found = str(current) or type(current).__name__  # keep walking: the deepest cause is clearest
        current = current.__cause__ or current.__context__
    return found


class _Commands(click.Group):
    """A database that is down or missing ends any command with one line on stderr, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            from rampart.db.migrate import MigrationError

            if isinstance(exc, MigrationError):
                raise click.ClickException(str(exc)) from None
            reason = _database_failure(exc)
            if reason is None:
                raise
            raise click.ClickException(f"cannot use the database: {reason}") from None


@click.group(cls=_Commands)
@click.version_option(package_name="rampart")
def main() -> None:
    """Rampart: a resource-oriented HTTP API on PostgreSQL."""
    # RAMPART_APP names a module of the project the command runs in (`shop.app:app`), importable from
    # there as `python -m` would find it, installed or not (uvicorn's --app-dir does the same).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


@main.command()
@click.argument("name")
@click.option(
    "--path",
    "parent",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to make the project's folder.",
)
def init(name: str, parent: Path) -> None:
    """Start a project of your own on Rampart in ./NAME (see docs/guide/build-your-app.md)."""
    from rampart.scaffold import ScaffoldError, create_project

    try:
        root = create_project(name, parent)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Made {root}: one example resource (notes), its migration, tests and a Makefile.")
    click.echo(f"Next:  cd {root} && make test && make run")


@main.command(context_settings={"show_default": True})
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8000)
@click.option("--workers", type=click.IntRange(1, 256), help="Worker processes.  [default: the CPU count]")
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
@click.option("--migrate/--no-migrate", default=True, help="Apply migrations first.")
@click.option(
    "--max-requests",
    type=click.IntRange(1),
    help="Recycle a worker after this many requests (with --workers 2 or more).",
)
@click.option(
    "--max-requests-jitter",
    default=0,
    type=click.IntRange(0),
    help="Add up to this many to --max-requests per worker, so workers do not all recycle at once.",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every worker's output to this file (one writer), rotated; default: stdout.",
)
@click.option(
    "--log-max-bytes",
    default=100 * 1024 * 1024,
    type=click.IntRange(0),
    help="Rotate the log file above this size (0: never by size).",
)
@click.option(
    "--log-rotate",
    type=click.Choice(["never", "hourly", "daily"]),
    default="daily",
    help="Rotate the log file at least this often.",
)
@click.option(
    "--log-keep", default=7, type=click.IntRange(0), help="Rotated log files to keep (oldest removed)."
)
def serve(
    host: str,
    port: int,
    workers: int | None,
    reload: bool,
    migrate: bool,
    max_requests: int | None,
    max_requests_jitter: int,
    log_file: Path | None,
    log_max_bytes: int,
    log_rotate: str,
    log_keep: int,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from rampart.clitasks import migrate_all
    from rampart.ops.http_protocol import HeadDeadlineProtocol

    workers = workers or os.cpu_count() or 1
    if max_requests is not None and workers == 1:
        # One worker is the whole server: recycling it would stop serving, no supervisor restarts it.
        raise click.ClickException("--max-requests needs --workers 2 or more")
    settings, server = _database(_settings())
    # On the way out, also on the SIGTERM exit below; last in, first out: the embedded database last.
    cleanups: list[Callable[[], None]] = [server.stop] if server is not None else []

    def clean_up() -> None:
        while cleanups:
            cleanups.pop()()

    def on_sigterm(signum: int, frame: Any) -> None:
        clean_up()
        os._exit(128 + signum)

    try:
        if migrate:
            migrate_all(settings)
        if not settings.is_production:
            _print_first_admin_link(settings)
        if workers > 1 and settings.redis_url is None:
            if settings.rate_limit_file is None:  # the workers share their limits through it
                table = _shared_file("rampart-ratelimit-")
                os.environ["RAMPART_RATE_LIMIT_FILE"] = table
                cleanups.append(lambda: Path(table).unlink(missing_ok=True))
            if settings.database_replica_urls:
                click.echo(
                    f"rampart: read replicas with {workers} workers and no RAMPART_REDIS_URL: a caller's "
                    "next read sees their own write only on the worker that made it",
                    err=True,
                )
        if max_requests is not None:  # each worker counts its own and drains itself (rampart.ops.drain)
            os.environ["RAMPART_MAX_REQUESTS"] = str(max_requests)
            os.environ["RAMPART_MAX_REQUESTS_JITTER"] = str(max_requests_jitter)
        loop = "auto"
        if workers > 1:  # spread connections evenly over the workers (rampart.ops.balance)
            from rampart.ops.balance import ENV, create_ledger_file

            ledger = _shared_file("rampart-balance-")
            create_ledger_file(ledger, slots=max(8, 4 * workers))
            os.environ[ENV] = ledger
            cleanups.append(lambda: Path(ledger).unlink(missing_ok=True))
            loop = "rampart.ops.balance:BalancedLoop"
        metrics_dir = _metrics_dir(workers)
        if metrics_dir is not None:
            cleanups.append(lambda: shutil.rmtree(metrics_dir, ignore_errors=True))
        if log_file is not None:
            from rampart.ops.logfile import INTERVALS, LogFile, capture_output

            output = LogFile(
                log_file, max_bytes=log_max_bytes or None, interval=INTERVALS.get(log_rotate), keep=log_keep
            )
            cleanups.append(capture_output(output))
        if workers > 1:  # the supervisor's own messages (a worker died, replaced, SIGTERM) as the workers'
            from rampart.ops.logging import configure_logging

            configure_logging(json=settings.json_logs, level=settings.log_level)
        # uvicorn re-raises SIGTERM once it has shut down gracefully; stop the embedded database then,
        # or the process would die leaving it running.
        signal.signal(signal.SIGTERM, on_sigterm)
        # A partial of a module-level class pickles by reference, so it reaches spawned workers as well.
        protocol = functools.partial(HeadDeadlineProtocol, head_timeout=settings.header_timeout)
        options: dict[str, Any] = dict(
            app="rampart.asgi:create",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=cast("type[asyncio.Protocol]", protocol),  # uvicorn calls it like the class
            loop=loop,
            ws="none",  # no WebSocket routes: an upgrade request is plain HTTP (and no websockets import)
            reload=reload,
            access_log=False,
            server_header=False,
            date_header=True,
            log_config=None,
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
            timeout_graceful_shutdown=10,
            # A SIGHUP's new worker must answer before its old one retires: 5 s is short on a busy machine.
            timeout_worker_healthcheck=30,
        )
        if workers > 1 and not reload:  # uvicorn's supervisor, with a liveness check of ours
            from rampart.ops.supervisor import Supervisor

            config = uvicorn.Config(**options)
            Supervisor(config, sockets=[config.bind_socket()]).run()
        else:
            uvicorn.run(**options)
    finally:
        clean_up()


def _print_first_admin_link(settings: Settings) -> None:
    """A newcomer's way in: on a database with no administrator, a link that makes one and signs in."""
    from rampart.clitasks import first_admin_link

    try:
        url = asyncio.run(first_admin_link(settings))
    except Exception as exc:  # no tables yet (--no-migrate), say: serving goes on without the link
        click.echo(f"rampart: could not check for an administrator ({type(exc).__name__})", err=True)
        return
    if url is not None:
        click.echo(
            "rampart: this database has no administrator yet. Open this link (once, within 10 minutes) to"
            f" create one and sign in to the console:\n\n    {url}\n",
            err=True,
        )


def _shared_file(prefix: str) -> str:
    """A new empty file (mode 0600) the workers share by mapping it: in /dev/shm, memory, where it exists."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - memory, not a disk
    fd, path = tempfile.mkstemp(prefix=prefix, dir=shm)
    os.close(fd)
    return path


def _metrics_dir(workers: int) -> str | None:
    """With several workers, a fresh folder they share metrics in (prometheus-client multiprocess mode).

    Set before any worker imports prometheus-client, which reads it then. Returned to remove on exit; an
    operator's own PROMETHEUS_MULTIPROC_DIR is emptied instead (stale files would add old counts).
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink()
    elif workers > 1:  # one process keeps its own registry: nothing to share
        path = tempfile.mkdtemp(prefix="rampart-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        return path
    return None


@main.command()
def migrate() -> None:
    """Apply pending migrations (safe to run from several processes at once)."""
    from rampart.clitasks import migrate_all

    with _database_settings() as settings:
        for step in migrate_all(settings):  # the tables placed on a Citus cluster, the first time
            click.echo(f"citus: {step}", err=True)
    click.echo("migrations: up to date", err=True)


@main.command()
@click.option("-m", "--message", help="What the migration does (its file name follows it).")
@click.option(
    "--allow-destructive",
    is_flag=True,
    help="Write a migration that drops a table or a column (their data is lost).",
)
@click.option("--merge", is_flag=True, help="Join the diverged heads of the app's migrations instead.")
@click.option(
    "--empty", is_flag=True, help="Write a revision with no operations, to fill in by hand (a rename...)."
)
def makemigrations(message: str | None, allow_destructive: bool, merge: bool, empty: bool) -> None:
    """Generate the app's migration from its declared resources (review it before committing)."""
    if merge:
        _merge_migrations(message or "merge")
        return
    if not message:
        raise click.UsageError("Missing option '-m' / '--message'.")
    from rampart.clitasks import make_app_migration

    with _database_settings() as settings:
        found = make_app_migration(
            settings, message=message, allow_destructive=allow_destructive, empty=empty
        )
    for change in found.not_written:
        click.echo(
            f"rampart: not written (another chain's table, Rampart's own or a bundled app's): {change}",
            err=True,
        )
    if found.dropped and not allow_destructive:
        raise click.ClickException(
            f"refused: this migration would drop {', '.join(found.dropped)}, data included; nothing was "
            "written. Run again with --allow-destructive if that is what you want."
        )
    if found.path is None:
        click.echo("No changes: the database matches the declared resources; no migration written.", err=True)
        return
    for item in found.locking:
        click.echo(
            f"rampart: warning: {item.what}: {item.why}.\n  Safe on a busy table: {item.recipe}.", err=True
        )
    if found.dropped:
        click.echo(f"rampart: this migration drops {', '.join(found.dropped)}, data included", err=True)


def _merge_migrations(message: str) -> None:
    from rampart.clitasks import merge_app_migrations
    from rampart.schema import migrations_dir

    settings = _settings()
    if merge_app_migrations(settings, message=message) is None:
        click.echo(f"Nothing to merge: the migrations in {migrations_dir(settings)} have one head.", err=True)


@main.command("config")
def show_config() -> None:
    """Print the effective settings, secrets masked."""
    click.echo(orjson.dumps(_settings().masked(), option=orjson.OPT_INDENT_2).decode())


@main.group("secrets")
def secrets_group() -> None:
    """Secrets for the configuration."""


@secrets_group.command("generate")
def secrets_generate() -> None:
    """Print a new random secret for RAMPART_JWT_SECRET (64 URL-safe characters, 384 bits)."""
    from rampart.lib.secret_strength import generate

    sys.stdout.write(generate() + "\n")


@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--name", default="")
@click.option("--role", default="user", show_default=True)
def users_create(email: str, name: str, role: str) -> None:
    """Create a user (or report that the email is taken)."""
    from rampart.clitasks import create_user

    click.echo(orjson.dumps(_run(create_user, email=email, name=name, role=role)).decode())


def _update_user(email: str, changes: dict[str, Any]) -> None:
    from rampart.clitasks import update_user

    click.echo(orjson.dumps(_run(update_user, email=email, changes=changes)).decode())


@users.command("set-role")
@click.option("--email", required=True)
@click.option("--role", required=True)
def users_set_role(email: str, role: str) -> None:
    """Change a user's role; prints the user. The last enabled admin cannot be demoted."""
    _update_user(email, {"role": role})


@users.command("disable")
@click.option("--email", required=True)
def users_disable(email: str) -> None:
    """Disable a user and end every session of theirs at once; prints the user."""
    _update_user(email, {"disabled": True})


@users.command("enable")
@click.option("--email", required=True)
def users_enable(email: str) -> None:
    """Enable a disabled user (their old sessions stay ended); prints the user."""
    _update_user(email, {"disabled": False})


@main.group()
def tokens() -> None:
    """Issue tokens."""


@tokens.command("issue")
@click.option("--email", required=True)
def tokens_issue(email: str) -> None:
    """Open a session for the user and print only its access token."""
    from rampart.clitasks import issue_token

    sys.stdout.write(_run(issue_token, email=email) + "\n")


@main.command("login-link")
@click.option("--email", required=True)
def login_link(email: str) -> None:
    """Print a one-time URL (10 minutes, single use) that signs a browser into the console as this
    administrator. The URL starts with RAMPART_PUBLIC_URL."""
    from rampart.clitasks import login_link as make_link

    sys.stdout.write(_run(make_link, email=email) + "\n")


@main.group()
def keys() -> None:
    """Access-token signing keys (EdDSA or RS256 mode)."""


@keys.command("rotate")
@click.option(
    "--alg",
    type=click.Choice(["EdDSA", "RS256"]),
    help="Algorithm of the new key (default: RAMPART_JWT_ALGORITHM).",
)
def keys_rotate(alg: str | None) -> None:
    """Add a new signing key and retire the others; they verify until their tokens expire. Prints the kid."""
    from rampart.clitasks import rotate_signing_key

    algorithm = alg or _settings().jwt_algorithm
    if algorithm == "HS256":
        raise click.ClickException(
            "RAMPART_JWT_ALGORITHM is HS256: its key is RAMPART_JWT_SECRET"
            " (set EdDSA or RS256 to use rotating keys)"
        )
    click.echo(_run(rotate_signing_key, alg=algorithm))


@main.group()
def events() -> None:
    """Event delivery: dead letters and replay."""


@events.command("dead")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
def events_dead(limit: int) -> None:
    """List dead deliveries (gave up after the maximum attempts), newest first, one JSON per line."""
    from rampart.clitasks import event_dead_letters

    for item in _run(event_dead_letters, limit=limit):
        click.echo(orjson.dumps(item).decode())


@events.command("replay")
@click.option("--subscriber", help="Only this subscriber's (e.g. webhook:<id>).")
@click.option("--event", "event_id", help="Only this event's.")
def events_replay(subscriber: str | None, event_id: str | None) -> None:
    """Deliver dead deliveries again (all, or one subscriber's and/or one event's)."""
    from rampart.clitasks import event_replay

    count = _run(event_replay, subscriber=subscriber, event_id=event_id)
    click.echo(f"replayed: {count}", err=True)


if __name__ == "__main__":
    main()
