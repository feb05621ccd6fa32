"""The signature algorithms a JWS is made or checked with, as joserfc registries (decision 0018).

A registry accepts only the algorithms it is given, by exact name: any other `alg`, `none` included, is
refused before a key is looked up. "EdDSA" keeps its name. RFC 9864 prefers "Ed25519" for the same
signature, and joserfc warns on every use of the old name (an exception where warnings are errors),
but API.md, most verifiers and the OpenID providers that sign with Ed25519 still say "EdDSA".
"""

from __future__ import annotations

from collections.abc import Collection

from joserfc.errors import UnsupportedAlgorithmError
from joserfc.jwa import EdDSAAlgorithm, JWSAlgModel
from joserfc.jws import JWSRegistry


class _EdDSA(EdDSAAlgorithm):
    """RFC 8037's EdDSA, without the warning."""

    security_warning = ""  # joserfc warns when this is not empty


_MODELS: dict[str, JWSAlgModel] = {**JWSRegistry.algorithms, "EdDSA": _EdDSA()}


class Algorithms(JWSRegistry):
    """A registry of exactly `names` (never `none`: a signature that is not one)."""

    def __init__(self, names: Collection[str]) -> None:
        unknown = [name for name in names if name not in _MODELS or name == "none"]
        if unknown:
            raise ValueError(f"unsupported signature algorithms: {', '.join(unknown)}")
        super().__init__(algorithms=list(names))
        self._models = {name: _MODELS[name] for name in names}

    def get_alg(self, name: str) -> JWSAlgModel:
        model = self._models.get(name)
        if model is None:
            raise UnsupportedAlgorithmError(f"algorithm {name!r} not accepted")
        return model
