package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import java.security.PublicKey;

/** A public key of an agency, its kid recomputed as the RFC 7638 thumbprint (never taken on trust). */
public record AgencyKey(String agency, String kid, String crv, PublicKey key) {

    /** From a public JWK ({kty, crv, x}); refuses one that carries a private part. */
    public static AgencyKey fromJwk(String agency, JsonNode jwk) {
        if (jwk.has("d")) {
            throw new IllegalArgumentException("a public key must not carry its private part");
        }
        String crv = jwk.path("crv").asText();
        String x = jwk.path("x").asText();
        if (!"OKP".equals(jwk.path("kty").asText()) || !(Okp.ED25519.equals(crv) || Okp.X25519.equals(crv))) {
            throw new IllegalArgumentException("not an OKP Ed25519 or X25519 key");
        }
        return new AgencyKey(agency, Okp.thumbprint(crv, x), crv, Okp.publicKey(crv, Base64Url.decode(x)));
    }
}
