package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.function.Consumer;

/**
 * A partner agency acting through deskbridge: its identity folder (`<home>/<agency>/`: `credential`,
 * `keys.jwks.json`, `directory.pin.jwk.json`, as the Python CLI writes them), the gateway, and the
 * directory verified against the pin. Every key used comes from that verified directory.
 */
public final class Partner {
    public static final String CREDENTIAL_FILE = "credential";

    private final String agency;
    private final AgencyKeys keys;
    private final Api api;
    private final Directory directory;

    public Partner(String server, Path home, String agency) {
        this(server, home, agency, false);
    }

    /** With `sign`, every request is signed with the agency's own key (RFC 9421) instead of its credential. */
    public Partner(String server, Path home, String agency, boolean sign) {
        Path folder = home.resolve(agency);
        this.agency = agency;
        this.keys = AgencyKeys.load(folder);
        if (!keys.agency().equals(agency)) {
            throw new EnvelopeException("key_file", folder.resolve(AgencyKeys.KEYS_FILE) + " holds the keys of "
                    + keys.agency() + ", not of " + agency);
        }
        this.api = sign ? new Api(server, null, new RequestSigner(keys)) : new Api(server, credential(folder), null);
        this.directory = api.directory(Directory.loadPin(folder));
    }

    private static String credential(Path folder) {
        Path path = folder.resolve(CREDENTIAL_FILE);
        try {
            return Files.readString(path).strip();
        } catch (NoSuchFileException e) {
            throw new EnvelopeException("key_file", "no credential at " + path);
        } catch (IOException e) {
            throw new EnvelopeException("key_file", "cannot read " + path + ": " + e.getMessage());
        }
    }

    public String agency() {
        return agency;
    }

    public Directory directory() {
        return directory;
    }

    public Api api() {
        return api;
    }

    /** An inbox item opened and verified: its cursor, the item, and the notice as the sender signed it. */
    public record Received(JsonNode item, Envelope.Opened opened) {
        public String cursor() {
            return item.get("cursor").asText();
        }
    }

    /**
     * Opens an inbox item with our own keys and verifies it (docs/envelope.md §5/§6) against the sender's
     * keys as of the notice's `sent_at`; EnvelopeException with the refusal code otherwise.
     */
    public Received open(JsonNode item) {
        Envelope.Parsed envelope = Envelope.parse(item.path("envelope").asText());
        if (!envelope.sender().equals(item.path("sender").asText())) {
            throw new EnvelopeException("header_mismatch", "the inbox entry names another sender than the envelope");
        }
        Instant sentAt = Notices.parseTime(envelope.routing().get("sent_at"));
        return new Received(item, Envelope.open(envelope, keys.decryptionKeys(), directory.signingKeys(sentAt)));
    }

    /** Acknowledges with a receipt signed here over the envelope exactly as the inbox served it. */
    public JsonNode acknowledge(Received received) {
        String noticeId = received.opened().notice().get("notice_id").asText();
        String receipt = Receipts.make(keys, noticeId, received.item().get("envelope").asText(), Instant.now());
        return api.acknowledge(noticeId, receipt);
    }

    /**
     * Every inbox item from the start, page by page (following `next_cursor`), to `each`; with `follow`,
     * then long-polls (`wait`) for more until interrupted.
     */
    public void pull(boolean follow, int waitSeconds, Consumer<JsonNode> each) {
        String cursor = null;
        boolean drained = false;
        while (true) {
            JsonNode page = api.inbox(cursor, drained ? waitSeconds : 0);
            page.path("items").forEach(each);
            if (page.path("next_cursor").isTextual()) {
                cursor = page.get("next_cursor").asText();
            }
            if (page.path("items").isEmpty()) {
                if (!follow) {
                    return;
                }
                drained = true;
            }
        }
    }

    /** Every inbox item from the start, then each new one as it is delivered, over Server-Sent Events. */
    public void stream(Consumer<JsonNode> each) {
        api.stream(each);
    }

    /** The inbox item of `noticeId`, looked for from the start of the inbox. */
    public JsonNode find(String noticeId) {
        List<JsonNode> found = new ArrayList<>();
        pull(false, 0, item -> {
            if (found.isEmpty() && noticeId.equalsIgnoreCase(item.path("notice_id").asText())) {
                found.add(item);
            }
        });
        if (found.isEmpty()) {
            throw new EnvelopeException("not_found", "notice " + noticeId + " is not in the inbox of " + agency);
        }
        return found.get(0);
    }

    /** Seals a notice (with `sender` = us) to its recipients' current enc keys and posts it. */
    public JsonNode send(ObjectNode notice) {
        List<AgencyKey> recipients = new ArrayList<>();
        for (JsonNode recipient : notice.path("recipients")) {
            recipients.add(directory.encryptionKey(recipient.asText()));
        }
        return api.submit(Envelope.seal(notice, keys, recipients));
    }

    /** A reply to an opened notice: same case, TLP and priority, addressed to its sender. */
    public ObjectNode reply(Received original, String summary, String details) {
        JsonNode notice = original.opened().notice();
        ObjectNode reply = Json.MAPPER.createObjectNode();
        reply.put("notice_id", UUID.randomUUID().toString());
        reply.put("type", "reply");
        reply.set("priority", notice.get("priority"));
        reply.set("tlp", notice.get("tlp"));
        reply.set("case_ref", notice.get("case_ref"));
        reply.putArray("recipients").add(notice.get("sender").asText());
        reply.put("summary", summary);
        if (details != null) {
            reply.put("details", details);
        }
        reply.put("in_reply_to", notice.get("notice_id").asText());
        reply.put("sender", agency);
        reply.put("sent_at", Notices.now());
        Notices.check(reply);
        return reply;
    }

    /** A new notice from a draft (schemas/json/notice-draft.schema.json), sender and sent_at filled in. */
    public ObjectNode fromDraft(JsonNode draft) {
        return Notices.fromDraft(draft, agency, Notices.now());
    }
}
