import { describe, expect, it } from "vitest";

import {
  bindingDifferences,
  instantOf,
  noticeProblems,
  routingFor,
  uuidOf,
  type Notice,
} from "../src/notice.js";
import { NOTICE, REPLY } from "./vectors.js";

const paths = (value: unknown) => noticeProblems(value).map((p) => p.path);
const FILE = { filename: "a.txt", media_type: "text/plain", data_b64: "" };

describe("the notice schema", () => {
  it("accepts the vectors", () => {
    expect(noticeProblems(NOTICE.notice)).toEqual([]);
    expect(noticeProblems(REPLY.notice)).toEqual([]);
  });

  it.each([
    ["a member too many", { colour: "red" }, ["colour"]],
    ["a member named like an object property", { toString: "x" }, ["toString"]],
    ["no summary", { summary: undefined }, ["summary"]],
    ["an empty summary", { summary: "" }, ["summary"]],
    ["a notice id that is no UUID", { notice_id: "3f1c2a9e" }, ["notice_id"]],
    ["a time without offset", { sent_at: "2025-03-31T09:00:00" }, ["sent_at"]],
    ["a time on the 30th of February", { expires_at: "2025-02-30T09:00:00Z" }, ["expires_at"]],
    ["a time that is the year 10000 in UTC", { expires_at: "9999-12-31T23:30:00-01:00" }, ["expires_at"]],
    ["a recipient twice", { recipients: ["kh-cnp", "kh-cnp"] }, ["recipients"]],
    ["no recipient", { recipients: [] }, ["recipients"]],
    ["an agency id in capitals", { sender: "KR-DESK" }, ["sender"]],
    ["a case reference in lowercase", { case_ref: "kd-2025-0331" }, ["case_ref"]],
    ["a reply without in_reply_to", { type: "reply" }, ["in_reply_to"]],
    ["subjects null", { subjects: null }, ["subjects"]],
    ["an unnamed subject", { subjects: [{ nationality: "KOR" }] }, ["subjects.0"]],
    ["a subject whose Latin name is blank", { subjects: [{ name_latin: "  " }] }, ["subjects.0.name_latin"]],
    [
      "a latitude beyond 90",
      { locations: [{ country: "KH", coordinates: { lat: 91, lon: 0 } }] },
      ["locations.0.coordinates.lat"],
    ],
    ["six attachments", { attachments: Array(6).fill(FILE) }, ["attachments"]],
    ["base64url data", { attachments: [{ ...FILE, data_b64: "a_b-" }] }, ["attachments.0.data_b64"]],
  ])("names %s", (_, change, expected) => {
    expect(paths({ ...NOTICE.notice, ...change })).toEqual(expected);
  });

  it("takes null as absent where pydantic does", () => {
    const nulls = { details: null, in_reply_to: null, expires_at: null };
    expect(noticeProblems({ ...NOTICE.notice, ...nulls })).toEqual([]);
  });

  it("counts lengths in code points, as Python does", () => {
    expect(paths({ ...NOTICE.notice, summary: "𝄞".repeat(2_000) })).toEqual([]);
    expect(paths({ ...NOTICE.notice, summary: "𝄞".repeat(2_001) })).toEqual(["summary"]);
  });
});

describe("values compared parsed", () => {
  it("reads a time as its instant, to the microsecond", () => {
    expect(instantOf("2025-04-30T18:00:00+09:00")).toBe(instantOf("2025-04-30T09:00:00Z"));
    expect(instantOf("2025-03-31T10:17:42.25Z")).toBe(instantOf("2025-03-31T10:17:42.250000Z"));
    expect(instantOf("2025-03-31T10:17:42.0000001Z")).toBe(instantOf("2025-03-31T10:17:42Z"));
    expect(instantOf("2025-03-31T10:17:42.000001Z")).not.toBe(instantOf("2025-03-31T10:17:42Z"));
    expect(instantOf("1970-01-01T00:00:01Z")).toBe(1_000_000n);
    expect(instantOf("0001-01-01T00:00:00Z")).toBe(-62135596800_000000n);
    expect(instantOf("0001-01-01T00:30:00+01:00")).toBeUndefined();
    expect(instantOf("2024-02-29T00:00:00Z")).toBeDefined();
    expect(instantOf("2025-03-31T24:00:00Z")).toBeUndefined();
  });

  it("reads a UUID in the forms pydantic takes", () => {
    const id = "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34";
    for (const form of [id.toUpperCase(), id.replaceAll("-", ""), `{${id}}`, `urn:uuid:${id}`])
      expect(uuidOf(form)).toBe(id);
    expect(uuidOf("3f1c2a9e-7b4d4e8a-9c61-0d5e8f2a7b34")).toBeUndefined();
  });

  it("finds each routing member that differs from the notice", () => {
    const notice = NOTICE.notice as unknown as Notice;
    const routing = routingFor(notice);
    expect(bindingDifferences(routing, notice)).toEqual([]);
    expect(bindingDifferences({ ...routing, sent_at: "2025-03-31T18:00:00+09:00" }, notice)).toEqual([]);
    const changed = { ...routing, tlp: "red" as const, in_reply_to: REPLY.notice.notice_id as string };
    expect(bindingDifferences(changed, notice)).toEqual(["tlp", "in_reply_to"]);
  });
});
