package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.Instant;
import java.time.LocalDate;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.UUID;
import java.util.regex.Pattern;

/**
 * The notice as JSON (schemas/json/notice.schema.json): rendering a draft the way deskbridge renders it
 * (docs/envelope.md §3 step 1), the routing header it is sealed under (§4.2), the shape checks a receiver
 * makes, and the binding check (§6).
 */
public final class Notices {
    public static final Pattern AGENCY_ID = Pattern.compile("^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$");
    public static final Pattern CASE_REF = Pattern.compile("^[A-Z]{2,8}-[0-9]{4}-[0-9A-Z]{1,12}$");
    private static final Pattern UUID_TEXT = Pattern.compile(
            "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$");
    public static final Set<String> TYPES = Set.of("missing_person", "kidnapping_confinement", "wanted_person",
            "scam_compound", "victim_rescue_request", "death_report", "intel_report", "reply");
    public static final Set<String> PRIORITIES = Set.of("flash", "immediate", "routine");
    public static final Set<String> TLPS = Set.of("clear", "green", "amber", "amber+strict", "red");
    private static final Set<String> MEMBERS = Set.of("notice_id", "type", "priority", "tlp", "case_ref",
            "recipients", "summary", "details", "interpol_colour", "subjects", "locations", "attachments",
            "expires_at", "in_reply_to", "forwarded_from", "sender", "sent_at");
    private static final Set<String> COLOURS = Set.of("yellow", "red", "blue", "green", "black", "orange", "purple");
    private static final Set<String> PERSON = Set.of("name_latin", "name_hangul", "date_of_birth", "nationality",
            "passport_number", "description");
    private static final Set<String> LOCATION = Set.of("country", "province", "text", "coordinates");
    private static final Set<String> ATTACHMENT = Set.of("filename", "media_type", "data_b64");
    private static final Pattern NATIONALITY = Pattern.compile("^[A-Z]{2,3}$");
    private static final Pattern COUNTRY = Pattern.compile("^[A-Z]{2}$");
    private static final Pattern DATE = Pattern.compile("^[0-9]{4}-[0-9]{2}-[0-9]{2}$");
    private static final Pattern MEDIA_TYPE = Pattern.compile("^[a-z]+/[a-zA-Z0-9.+-]+$");
    private static final Pattern STANDARD_BASE64 = Pattern.compile("^[A-Za-z0-9+/=]*$");
    private static final Set<String> SHORT_TEXT = Set.of("name_latin", "name_hangul", "province", "filename");
    private static final Set<String> TIMES = Set.of("sent_at", "expires_at");
    private static final Set<String> UUIDS = Set.of("notice_id", "in_reply_to", "forwarded_from");
    /** Routing header member -> notice member (§4.2), in the order deskbridge writes them. */
    private static final List<Map.Entry<String, String>> ROUTING = List.of(
            Map.entry("sender", "sender"), Map.entry("notice_id", "notice_id"), Map.entry("notice_type", "type"),
            Map.entry("priority", "priority"), Map.entry("tlp", "tlp"), Map.entry("case_ref", "case_ref"),
            Map.entry("recipients", "recipients"), Map.entry("sent_at", "sent_at"),
            Map.entry("expires_at", "expires_at"), Map.entry("in_reply_to", "in_reply_to"),
            Map.entry("forwarded_from", "forwarded_from"));

    private Notices() {}

    /** RFC 3339 as deskbridge writes it: seconds, `.ffffff` only when non-zero, `Z` or the offset kept. */
    public static String renderTime(OffsetDateTime at) {
        OffsetDateTime t = at.truncatedTo(ChronoUnit.MICROS);
        String text = t.toLocalDateTime().format(DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss"));
        if (t.getNano() != 0) {
            text += String.format(".%06d", t.getNano() / 1000);
        }
        return text + (t.getOffset().equals(ZoneOffset.UTC) ? "Z" : t.getOffset().getId());
    }

    public static String now() {
        return renderTime(OffsetDateTime.now(ZoneOffset.UTC));
    }

    /** A time with an offset (a time without one never matches), or null if it is not one. */
    public static Instant parseTime(JsonNode value) {
        if (value == null || !value.isTextual()) {
            return null;
        }
        try {
            OffsetDateTime t = OffsetDateTime.parse(value.asText(), DateTimeFormatter.ISO_OFFSET_DATE_TIME);
            int year = t.withOffsetSameInstant(ZoneOffset.UTC).getYear();
            return year >= 1 && year <= 9999 ? t.toInstant() : null;
        } catch (DateTimeParseException e) {
            return null;
        }
    }

    public static UUID parseUuid(JsonNode value) {
        if (value == null || !value.isTextual() || !UUID_TEXT.matcher(value.asText()).matches()) {
            return null;
        }
        return UUID.fromString(value.asText());
    }

    /**
     * A draft (schemas/json/notice-draft.schema.json) made a notice: `sender` and `sent_at` filled, null
     * members left out at every depth, short text trimmed, times and UUIDs written as deskbridge writes them.
     */
    public static ObjectNode fromDraft(JsonNode draft, String sender, String sentAt) {
        if (!draft.isObject()) {
            throw new EnvelopeException("invalid_request", "the draft is not a JSON object");
        }
        for (String member : List.of("sender", "sent_at")) {
            if (draft.has(member)) {
                throw new EnvelopeException("invalid_request", "a draft has no " + member + "; it is filled in");
            }
        }
        ObjectNode notice = (ObjectNode) render(draft.deepCopy());
        notice.put("sender", sender);
        notice.put("sent_at", sentAt);
        check(notice);
        return notice;
    }

    private static JsonNode render(JsonNode node) {
        if (node.isObject()) {
            Iterator<Map.Entry<String, JsonNode>> members = node.properties().iterator();
            while (members.hasNext()) {
                Map.Entry<String, JsonNode> member = members.next();
                JsonNode value = member.getValue();
                if (value.isNull()) {
                    members.remove();
                } else if (value.isTextual() && SHORT_TEXT.contains(member.getKey())) {
                    member.setValue(Json.MAPPER.getNodeFactory().textNode(value.asText().strip()));
                } else if (TIMES.contains(member.getKey()) && parseTime(value) != null) {
                    OffsetDateTime t = OffsetDateTime.parse(value.asText(), DateTimeFormatter.ISO_OFFSET_DATE_TIME);
                    member.setValue(Json.MAPPER.getNodeFactory().textNode(renderTime(t)));
                } else if (UUIDS.contains(member.getKey()) && parseUuid(value) != null) {
                    member.setValue(Json.MAPPER.getNodeFactory().textNode(parseUuid(value).toString()));
                } else {
                    render(value);
                }
            }
        } else if (node.isArray()) {
            node.forEach(Notices::render);
        }
        return node;
    }

    /**
     * `malformed` unless the notice is valid under schemas/json/notice.schema.json (closed at every depth;
     * written out here rather than run through a JSON Schema library).
     */
    public static void check(JsonNode notice) {
        if (!notice.isObject()) {
            throw malformed("the notice is not a JSON object");
        }
        notice.fieldNames().forEachRemaining(name -> {
            if (!MEMBERS.contains(name)) {
                throw malformed("unknown member " + name);
            }
        });
        requireText(notice, "sender", AGENCY_ID);
        requireText(notice, "case_ref", CASE_REF);
        requireIn(notice, "type", TYPES);
        requireIn(notice, "priority", PRIORITIES);
        requireIn(notice, "tlp", TLPS);
        String summary = notice.path("summary").isTextual() ? notice.get("summary").asText() : "";
        if (summary.isEmpty() || summary.codePointCount(0, summary.length()) > 2000) {
            throw malformed("summary must be 1 to 2000 characters");
        }
        if (parseUuid(notice.get("notice_id")) == null) {
            throw malformed("notice_id is not a UUID");
        }
        if (parseTime(notice.get("sent_at")) == null) {
            throw malformed("sent_at is not a date-time with an offset");
        }
        for (String optional : List.of("expires_at")) {
            if (present(notice, optional) && parseTime(notice.get(optional)) == null) {
                throw malformed(optional + " is not a date-time with an offset");
            }
        }
        for (String optional : List.of("in_reply_to", "forwarded_from")) {
            if (present(notice, optional) && parseUuid(notice.get(optional)) == null) {
                throw malformed(optional + " is not a UUID");
            }
        }
        recipients(notice.get("recipients"), "recipients");
        optionalText(notice, "details", 0, 20000, null);
        if (present(notice, "interpol_colour") && !COLOURS.contains(notice.get("interpol_colour").asText(""))) {
            throw malformed("interpol_colour is not one of " + COLOURS);
        }
        for (JsonNode person : list(notice, "subjects", 50)) {
            members(person, "a subject", PERSON);
            optionalText(person, "name_latin", 1, 500, null);
            optionalText(person, "name_hangul", 1, 500, null);
            optionalText(person, "nationality", 0, 3, NATIONALITY);
            optionalText(person, "passport_number", 0, 32, null);
            optionalText(person, "description", 0, 20000, null);
            optionalText(person, "date_of_birth", 0, 10, DATE);
            if (present(person, "date_of_birth")) {
                try {
                    LocalDate.parse(person.get("date_of_birth").asText());
                } catch (DateTimeParseException e) {
                    throw malformed("date_of_birth is not a date");
                }
            }
        }
        for (JsonNode location : list(notice, "locations", 50)) {
            members(location, "a location", LOCATION);
            requireText(location, "country", COUNTRY);
            optionalText(location, "province", 1, 500, null);
            optionalText(location, "text", 0, 20000, null);
            if (present(location, "coordinates")) {
                JsonNode at = location.get("coordinates");
                members(at, "coordinates", Set.of("lat", "lon"));
                if (!at.path("lat").isNumber() || !at.path("lon").isNumber()
                        || Math.abs(at.get("lat").asDouble()) > 90 || Math.abs(at.get("lon").asDouble()) > 180) {
                    throw malformed("coordinates need lat in [-90, 90] and lon in [-180, 180]");
                }
            }
        }
        for (JsonNode attachment : list(notice, "attachments", 5)) {
            members(attachment, "an attachment", ATTACHMENT);
            requireText(attachment, "media_type", MEDIA_TYPE);
            if (!attachment.path("filename").isTextual() || !attachment.path("data_b64").isTextual()) {
                throw malformed("an attachment needs filename, media_type and data_b64");
            }
            optionalText(attachment, "filename", 1, 500, null);
            optionalText(attachment, "data_b64", 0, 700_000, STANDARD_BASE64);
        }
    }

    private static List<JsonNode> list(JsonNode notice, String member, int max) {
        if (!present(notice, member)) {
            return List.of();
        }
        JsonNode value = notice.get(member);
        if (!value.isArray() || value.size() > max) {
            throw malformed(member + " is not a list of at most " + max);
        }
        List<JsonNode> items = new ArrayList<>();
        value.forEach(items::add);
        return items;
    }

    private static void members(JsonNode node, String what, Set<String> allowed) {
        if (!node.isObject()) {
            throw malformed(what + " is not a JSON object");
        }
        node.fieldNames().forEachRemaining(name -> {
            if (!allowed.contains(name)) {
                throw malformed(what + " has an unknown member " + name);
            }
        });
    }

    /** Absent, null, or a string of `min` to `max` characters (code points) matching `pattern`. */
    private static void optionalText(JsonNode node, String member, int min, int max, Pattern pattern) {
        if (!present(node, member)) {
            return;
        }
        JsonNode value = node.get(member);
        String text = value.isTextual() ? value.asText() : null;
        int length = text == null ? -1 : text.codePointCount(0, text.length());
        if (text == null || length < min || length > max || (pattern != null && !pattern.matcher(text).matches())) {
            throw malformed(member + " is not valid");
        }
    }

    /** The routing header of a notice, as §4.2 lists it (absent members left out). */
    public static ObjectNode routingOf(JsonNode notice) {
        ObjectNode routing = Json.MAPPER.createObjectNode();
        for (Map.Entry<String, String> field : ROUTING) {
            if (present(notice, field.getValue())) {
                routing.set(field.getKey(), notice.get(field.getValue()).deepCopy());
            }
        }
        return routing;
    }

    /** `malformed` unless the JWE protected header's routing fields are valid (§4.2). */
    public static void checkRouting(JsonNode routing) {
        requireText(routing, "sender", AGENCY_ID);
        requireText(routing, "case_ref", CASE_REF);
        requireIn(routing, "notice_type", TYPES);
        requireIn(routing, "priority", PRIORITIES);
        requireIn(routing, "tlp", TLPS);
        if (parseUuid(routing.get("notice_id")) == null) {
            throw malformed("routing notice_id is not a UUID");
        }
        if (parseTime(routing.get("sent_at")) == null) {
            throw malformed("routing sent_at is not a date-time with an offset in the years 1-9999");
        }
        if (present(routing, "expires_at") && parseTime(routing.get("expires_at")) == null) {
            throw malformed("routing expires_at is not a date-time with an offset in the years 1-9999");
        }
        for (String optional : List.of("in_reply_to", "forwarded_from")) {
            if (present(routing, optional) && parseUuid(routing.get(optional)) == null) {
                throw malformed("routing " + optional + " is not a UUID");
            }
        }
        recipients(routing.get("recipients"), "routing recipients");
    }

    /** §6: `header_mismatch` unless the routing header says exactly what the signed notice says. */
    public static void checkBinding(JsonNode routing, JsonNode notice) {
        for (Map.Entry<String, String> field : ROUTING) {
            JsonNode said = present(routing, field.getKey()) ? routing.get(field.getKey()) : null;
            JsonNode signed = present(notice, field.getValue()) ? notice.get(field.getValue()) : null;
            if (!Objects.equals(parsed(field.getKey(), said), parsed(field.getKey(), signed))) {
                throw new EnvelopeException("header_mismatch",
                        "the routing header's " + field.getKey() + " differs from the signed notice");
            }
        }
    }

    private static Object parsed(String field, JsonNode value) {
        if (value == null) {
            return null;
        }
        if (TIMES.contains(field)) {
            Instant at = parseTime(value);
            return at != null ? at : value; // a time without an offset never matches one with
        }
        if (UUIDS.contains(field)) {
            UUID id = parseUuid(value);
            return id != null ? id : value;
        }
        return value;
    }

    public static List<String> recipients(JsonNode value, String what) {
        if (value == null || !value.isArray() || value.isEmpty() || value.size() > 50) {
            throw malformed(what + " must be a list of 1 to 50 agency ids");
        }
        List<String> ids = new ArrayList<>();
        for (JsonNode id : (ArrayNode) value) {
            if (!id.isTextual() || !AGENCY_ID.matcher(id.asText()).matches()) {
                throw malformed(what + " holds something that is not an agency id");
            }
            ids.add(id.asText());
        }
        if (new HashSet<>(ids).size() != ids.size()) {
            throw malformed(what + " names an agency twice");
        }
        return ids;
    }

    private static boolean present(JsonNode node, String member) {
        return node.has(member) && !node.get(member).isNull();
    }

    private static void requireText(JsonNode node, String member, Pattern pattern) {
        JsonNode value = node.get(member);
        if (value == null || !value.isTextual() || !pattern.matcher(value.asText()).matches()) {
            throw malformed(member + " is missing or not valid");
        }
    }

    private static void requireIn(JsonNode node, String member, Set<String> allowed) {
        JsonNode value = node.get(member);
        if (value == null || !value.isTextual() || !allowed.contains(value.asText())) {
            throw malformed(member + " is missing or not one of " + allowed);
        }
    }

    private static EnvelopeException malformed(String detail) {
        return new EnvelopeException("malformed", detail);
    }
}
