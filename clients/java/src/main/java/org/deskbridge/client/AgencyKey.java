package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.nimbusds.jose.jwk.OctetKeyPair;

/** A public key of an agency, its kid recomputed as the RFC 7638 thumbprint (never taken on trust). */
public record AgencyKey(String agency, String kid, OctetKeyPair jwk) {

    /** From a public JWK ({kty, crv, x}); refuses one that carries a private part. */
    public static AgencyKey fromJwk(String agency, JsonNode jwk) {
        if (jwk.has("d")) {
            throw new IllegalArgumentException("a public key must not carry its private part");
        }
        OctetKeyPair key = Okp.publicKey(jwk);
        return new AgencyKey(agency, Okp.thumbprint(key), key);
    }

    public String crv() {
        return jwk.getCurve().getName();
    }
}
