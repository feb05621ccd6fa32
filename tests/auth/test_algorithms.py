"""The signature registries (`rampart.auth.algorithms`): exactly the algorithms given, and "EdDSA" without
joserfc's warning (the suite turns warnings into errors, so a warning fails these tests)."""

from __future__ import annotations

import pytest
from joserfc import jws
from joserfc.errors import BadSignatureError, UnsupportedAlgorithmError
from joserfc.jwk import OctKey, OKPKey

from rampart.auth.algorithms import Algorithms


def test_only_the_algorithms_given_are_accepted() -> None:
    registry = Algorithms(["RS256", "EdDSA"])
    assert registry.get_alg("RS256").name == "RS256"
    for other in ("HS256", "RS384", "Ed25519", "none", "NONE", "rs256", ""):
        with pytest.raises(UnsupportedAlgorithmError):
            registry.get_alg(other)


@pytest.mark.parametrize("names", [["none"], ["HS256", "none"], ["XS999"]])
def test_none_and_unknown_names_cannot_be_registered(names: list[str]) -> None:
    with pytest.raises(ValueError, match="unsupported signature algorithms"):
        Algorithms(names)


def test_eddsa_signs_and_verifies_under_its_name_without_a_warning() -> None:
    registry = Algorithms(["EdDSA"])
    key = OKPKey.generate_key("Ed25519", private=True)
    token = jws.serialize_compact({"alg": "EdDSA"}, b"payload", key, registry=registry)
    assert jws.deserialize_compact(token, key, registry=registry).payload == b"payload"
    other = OKPKey.generate_key("Ed25519")
    forged = jws.serialize_compact({"alg": "EdDSA"}, b"payload", other, registry=registry)
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(forged, key, registry=registry)


def test_a_signature_by_an_algorithm_not_given_is_refused() -> None:
    key = OctKey.import_key("a-secret-" + "k" * 40)
    token = jws.serialize_compact({"alg": "HS512"}, b"payload", key, registry=Algorithms(["HS512"]))
    with pytest.raises(UnsupportedAlgorithmError):
        jws.deserialize_compact(token, key, registry=Algorithms(["HS256"]))
