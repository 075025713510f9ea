package org.deskbridge.client;

import java.nio.charset.StandardCharsets;
import java.util.Base64;

/** Base64url as JOSE wants it (RFC 7515 §2): no padding, and only the one canonical spelling is read. */
public final class Base64Url {
    private static final Base64.Encoder ENCODER = Base64.getUrlEncoder().withoutPadding();
    private static final Base64.Decoder DECODER = Base64.getUrlDecoder();

    private Base64Url() {}

    public static String encode(byte[] data) {
        return ENCODER.encodeToString(data);
    }

    public static String encode(String text) {
        return encode(text.getBytes(StandardCharsets.UTF_8));
    }

    /** The bytes, or `malformed` for padding, white space, a foreign alphabet or non-zero unused bits. */
    public static byte[] decode(String text) {
        if (text == null || !text.matches("[A-Za-z0-9_-]*")) {
            throw new EnvelopeException("malformed", "a base64url field is not in canonical unpadded form");
        }
        byte[] data;
        try {
            data = DECODER.decode(text);
        } catch (IllegalArgumentException e) {
            throw new EnvelopeException("malformed", "a base64url field does not decode", e);
        }
        if (!encode(data).equals(text)) {
            throw new EnvelopeException("malformed", "a base64url field is not in canonical unpadded form");
        }
        return data;
    }
}
