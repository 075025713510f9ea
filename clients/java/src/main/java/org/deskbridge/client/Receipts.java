package org.deskbridge.client;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.UUID;
import java.util.function.Function;

/**
 * Signed receipts (docs/subscriptions.md): the recipient signs {notice_id, envelope_sha256, agency, iat}
 * of the copy it received, so the desk can prove who received what and when.
 */
public final class Receipts {
    public static final String TYP = "deskbridge-receipt+jws";
    private static final long LAST_UNIX_SECOND = 253_402_300_799L;

    private Receipts() {}

    /** What a recipient sends with `POST /v1/inbox/{id}/ack`: `envelope` exactly as the inbox served it. */
    public static String make(AgencyKeys signer, String noticeId, String envelope, Instant at) {
        ObjectNode receipt = Json.MAPPER.createObjectNode();
        receipt.put("notice_id", noticeId);
        receipt.put("envelope_sha256", Okp.sha256Hex(envelope.getBytes(StandardCharsets.UTF_8)));
        receipt.put("agency", signer.agency());
        receipt.put("iat", at.getEpochSecond());
        return CompactJws.sign(Json.canonical(receipt), signer, TYP, null);
    }

    /**
     * The receipt's payload once shown to be `recipient`'s signature over this copy (`bad_receipt`
     * otherwise). `keyOf(kid)` is the directory's signing key lookup. Freshness is the gateway's to judge.
     */
    public static ObjectNode verify(String token, Function<String, AgencyKey> keyOf, String recipient, String noticeId,
                                    String envelope) {
        ObjectNode payload;
        try {
            CompactJws.Parts jws = CompactJws.read(token);
            if (!TYP.equals(jws.header().path("typ").asText())) {
                throw new EnvelopeException("bad_receipt", "the receipt needs typ " + TYP);
            }
            AgencyKey key = keyOf.apply(jws.kid());
            if (!key.agency().equals(recipient)) {
                throw new EnvelopeException("bad_receipt", "the receipt is signed by " + key.agency() + ", not by " + recipient);
            }
            payload = Json.object(CompactJws.verify(jws, kid -> key, CompactJws.ED25519_OR_LEGACY), "receipt");
        } catch (EnvelopeException e) {
            throw e.code().equals("bad_receipt") ? e : new EnvelopeException("bad_receipt", "the receipt does not verify: " + e.detail());
        }
        long iat = payload.path("iat").canConvertToLong() ? payload.get("iat").asLong() : -1;
        boolean same = Notices.parseUuid(payload.get("notice_id")) != null
                && Notices.parseUuid(payload.get("notice_id")).equals(UUID.fromString(noticeId))
                && payload.path("envelope_sha256").asText().equals(Okp.sha256Hex(envelope.getBytes(StandardCharsets.UTF_8)))
                && payload.path("agency").asText().equals(recipient)
                && payload.size() == 4 && iat >= 0 && iat <= LAST_UNIX_SECOND;
        if (!same) {
            throw new EnvelopeException("bad_receipt", "the receipt names another notice, envelope or agency");
        }
        return payload;
    }
}
