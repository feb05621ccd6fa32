"""What an access token costs to issue and to verify, per algorithm (HS256, EdDSA, RS256).

Times `TokenIssuer` itself, in one process, with no database: the asymmetric keys are made in memory
(as `rampart.auth.keys.rotate` makes them) and handed to a `KeyRing` that never loads. Per algorithm:

- issue: `TokenIssuer.issue()`;
- verify, first sight: `verify()` of a token this issuer has not seen (every token is new), i.e. the
  signature check, the JSON parse and the claim checks; what a worker pays the first time a token reaches
  it (then once per token and worker until the token expires);
- verify, seen: `verify()` of the same token again (served by the issuer's cache of verified strings);
  what every later request with that token pays.

Each figure is the best of `--repeat` timeit runs of `--number` calls, in microseconds per call.

Run: `.venv/bin/python bench/token_verify.py [--src PATH] [--number 5000] [--repeat 7]`. `--src` times
another checkout's code with this venv's libraries (e.g. main's: `git archive main src | tar -x -C /tmp/m`,
then `--src /tmp/m/src`; main needs PyJWT installed). Recorded in docs/decisions/0018-one-jose-library.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
import uuid
from typing import Any

ALGORITHMS = ("HS256", "EdDSA", "RS256")


def issuer_for(alg: str) -> Any:
    from joserfc.jwk import JWKRegistry

    from rampart.auth import keys
    from rampart.auth.tokens import TokenIssuer

    ring = None
    if alg != "HS256":
        ring = keys.KeyRing(db=None, alg=alg, verify_window=960)  # type: ignore[arg-type]  # never loads
        kid = str(uuid.uuid4())
        params: Any = {"kid": kid, "alg": alg, "use": "sig"}
        key = JWKRegistry.generate_key(*keys._KEY_TYPES[alg], parameters=params, private=True)
        ring._keys = {kid: keys._load(kid, alg, json.dumps(key.as_dict(private=True)))}
        ring._signing = ring._keys[kid]
    return TokenIssuer(
        secret="bench-secret-" + "x" * 40,
        issuer="rampart",
        audience="rampart-api",
        ttl=900,
        cache_size=10_000_000,
        keys=ring,
    )


def best(stmt: Any, number: int, repeat: int) -> float:
    """Microseconds per call, best of `repeat` runs of `number` calls."""
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e6


def measure(alg: str, number: int, repeat: int) -> tuple[float, float, float]:
    issuer = issuer_for(alg)
    user_id, session_id = uuid.uuid4(), uuid.uuid4()

    def issue() -> str:
        return str(issuer.issue(user_id=user_id, session_id=session_id, role="user"))

    issued = best(issue, number, repeat)
    # First sight: a fresh token per call, made beforehand (outside the timing).
    batches = [[issue() for _ in range(number)] for _ in range(repeat)]
    verify = issuer.verify
    runs = [timeit.timeit(lambda b=batch: [verify(t) for t in b], number=1) for batch in batches]
    first = min(runs) / number * 1e6
    token = issue()
    issuer.verify(token)
    seen = best(lambda: issuer.verify(token), number, repeat)
    return issued, first, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", help="import rampart from this directory instead of the installed one")
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--alg", action="append", choices=ALGORITHMS, help="only these (repeatable)")
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, args.src)
    import rampart

    print(f"rampart from {rampart.__file__}")
    print("| algorithm | issue (µs) | verify, first sight (µs) | verify, seen (µs) |")
    print("| --- | ---: | ---: | ---: |")
    for alg in args.alg or ALGORITHMS:
        number = args.number if alg != "RS256" else max(args.number // 5, 100)  # RSA signing is slow
        issued, first, seen = measure(alg, number, args.repeat)
        print(f"| {alg} | {issued:.1f} | {first:.1f} | {seen:.2f} |")


if __name__ == "__main__":
    main()
