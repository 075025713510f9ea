package org.deskbridge.client;

/** A refusal with a stable reason code: docs/envelope.md §7 for envelopes, or the client's own reason. */
public class EnvelopeException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final String code;

    public EnvelopeException(String code, String detail) {
        super(detail);
        this.code = code;
    }

    public EnvelopeException(String code, String detail, Throwable cause) {
        super(detail, cause);
        this.code = code;
    }

    public String code() {
        return code;
    }

    public String detail() {
        return getMessage();
    }
}
