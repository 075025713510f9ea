package org.deskbridge.client;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.MessageDigest;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.Signature;
import java.security.spec.PKCS8EncodedKeySpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.Arrays;

/**
 * OKP keys (RFC 8037) over the JDK's own Ed25519 and X25519: raw 32-byte keys wrapped in the fixed DER
 * prefixes of RFC 8410, so no third-party provider is needed.
 */
public final class Okp {
    public static final String ED25519 = "Ed25519";
    public static final String X25519 = "X25519";

    private static final byte[] ED25519_SPKI = hex("302a300506032b6570032100");
    private static final byte[] X25519_SPKI = hex("302a300506032b656e032100");
    private static final byte[] ED25519_PKCS8 = hex("302e020100300506032b657004220420");
    private static final byte[] X25519_PKCS8 = hex("302e020100300506032b656e04220420");

    private Okp() {}

    public static PublicKey publicKey(String crv, byte[] raw) {
        check(raw);
        try {
            return KeyFactory.getInstance(crv).generatePublic(new X509EncodedKeySpec(concat(spki(crv), raw)));
        } catch (GeneralSecurityException e) {
            throw new IllegalArgumentException("not an " + crv + " public key", e);
        }
    }

    public static PrivateKey privateKey(String crv, byte[] raw) {
        check(raw);
        try {
            return KeyFactory.getInstance(crv).generatePrivate(new PKCS8EncodedKeySpec(concat(pkcs8(crv), raw)));
        } catch (GeneralSecurityException e) {
            throw new IllegalArgumentException("not an " + crv + " private key", e);
        }
    }

    /** The 32 raw bytes of an Ed25519 or X25519 public key (the JWK's `x`). */
    public static byte[] raw(PublicKey key) {
        byte[] der = key.getEncoded();
        return Arrays.copyOfRange(der, der.length - 32, der.length);
    }

    /** RFC 7638 thumbprint with SHA-256: the kid of every deskbridge key. */
    public static String thumbprint(String crv, String x) {
        String members = "{\"crv\":\"" + crv + "\",\"kty\":\"OKP\",\"x\":\"" + x + "\"}";
        return Base64Url.encode(sha256(members.getBytes(StandardCharsets.UTF_8)));
    }

    public static byte[] sign(PrivateKey key, byte[] message) {
        try {
            Signature signer = Signature.getInstance(ED25519);
            signer.initSign(key);
            signer.update(message);
            return signer.sign();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("Ed25519 signing failed", e);
        }
    }

    public static boolean verify(PublicKey key, byte[] message, byte[] signature) {
        if (signature.length != 64) {
            return false;
        }
        try {
            Signature verifier = Signature.getInstance(ED25519);
            verifier.initVerify(key);
            verifier.update(message);
            return verifier.verify(signature);
        } catch (GeneralSecurityException e) {
            return false;
        }
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

    private static byte[] spki(String crv) {
        return ED25519.equals(crv) ? ED25519_SPKI : X25519_SPKI;
    }

    private static byte[] pkcs8(String crv) {
        return ED25519.equals(crv) ? ED25519_PKCS8 : X25519_PKCS8;
    }

    private static void check(byte[] raw) {
        if (raw.length != 32) {
            throw new IllegalArgumentException("an OKP key is 32 bytes, not " + raw.length);
        }
    }

    static byte[] concat(byte[]... parts) {
        int length = 0;
        for (byte[] part : parts) {
            length += part.length;
        }
        byte[] out = new byte[length];
        int at = 0;
        for (byte[] part : parts) {
            System.arraycopy(part, 0, out, at, part.length);
            at += part.length;
        }
        return out;
    }

    private static byte[] hex(String text) {
        byte[] out = new byte[text.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(text.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }
}
