package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.nimbusds.jose.JOSEException;
import com.nimbusds.jose.jwk.Curve;
import com.nimbusds.jose.jwk.OctetKeyPair;
import com.nimbusds.jose.util.Base64URL;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;

/**
 * OKP keys (RFC 8037) as Nimbus {@link OctetKeyPair}s, built from their `crv` and `x` (and `d`) only, each
 * checked to be 32 bytes in canonical base64url first: Nimbus takes any length and any spelling, and the
 * directory's own members (status, nbf, revoked_at, ...) are not JWK parameters Nimbus should judge.
 */
public final class Okp {
    public static final String ED25519 = "Ed25519";
    public static final String X25519 = "X25519";

    private Okp() {}

    /** The public key of a JWK ({kty: OKP, crv: Ed25519 or X25519, x}); IllegalArgumentException otherwise. */
    public static OctetKeyPair publicKey(JsonNode jwk) {
        if (!"OKP".equals(jwk.path("kty").asText())) {
            throw new IllegalArgumentException("not an OKP key");
        }
        return new OctetKeyPair.Builder(curve(jwk.path("crv").asText()), bytes32(jwk.path("x").asText())).build();
    }

    /** The key pair of a JWK with its private part `d`. */
    public static OctetKeyPair privateKey(JsonNode jwk) {
        return new OctetKeyPair.Builder(publicKey(jwk)).d(bytes32(jwk.path("d").asText())).build();
    }

    /** RFC 7638 thumbprint with SHA-256 (Nimbus's): the kid of every deskbridge key. */
    public static String thumbprint(OctetKeyPair key) {
        try {
            return key.computeThumbprint().toString();
        } catch (JOSEException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The thumbprint of the public key {crv, x}, as docs/envelope.md §2 writes it out. */
    public static String thumbprint(String crv, String x) {
        return thumbprint(new OctetKeyPair.Builder(curve(crv), bytes32(x)).build());
    }

    public static byte[] sha256(byte[] data) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(data);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }

    public static String sha256Hex(byte[] data) {
        StringBuilder out = new StringBuilder(64);
        for (byte b : sha256(data)) {
            out.append(String.format("%02x", b));
        }
        return out.toString();
    }

    private static Curve curve(String crv) {
        if (!ED25519.equals(crv) && !X25519.equals(crv)) {
            throw new IllegalArgumentException("not an Ed25519 or X25519 key");
        }
        return Curve.parse(crv);
    }

    private static Base64URL bytes32(String text) {
        byte[] raw;
        try {
            raw = Base64Url.decode(text);
        } catch (EnvelopeException e) {
            throw new IllegalArgumentException("an OKP key member is not canonical base64url", e);
        }
        if (raw.length != 32) {
            throw new IllegalArgumentException("an OKP key is 32 bytes, not " + raw.length);
        }
        return new Base64URL(text);
    }
}
