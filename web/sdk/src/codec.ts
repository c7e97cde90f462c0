// Protocol v2 on the wire: one MessagePack map per payload, `e` naming
// the command or event, optional keys omitted. Commands are written with
// their keys in the order the Rust reference writes them, so the SDK's
// bytes are the server's own (test/protocol.test.ts compares them with
// test/fixtures/v2.json). Events are read by key name, any integer width,
// nil taken as absent, unknown keys ignored; an unknown or ill-formed
// event decodes to `null` (newer servers add events: clients ignore them).
//
// Also here: what an MQTT 5 PUBACK says about a `msg` (docs/asyncapi.yaml,
// `x-puback`).

import { decode, encode } from "@msgpack/msgpack";
import type { Card, Command, ErrorBody, ErrorCode, Preview, ServerEvent } from "./protocol.js";

/** A `msg` command: text, or an image by its upload id. */
export function msgCommand(k: string, b: string, type: "text" | "image" = "text"): Command {
  return type === "image" ? { e: "msg", k, b, t: "image" } : { e: "msg", k, b };
}

export function encodeCommand(command: Command): Uint8Array {
  // Built afresh so that the key order is the reference's whatever the
  // caller's object looks like.
  let map: Record<string, unknown>;
  switch (command.e) {
    case "msg":
      map = command.t ? { e: "msg", k: command.k, b: command.b, t: command.t } : { e: "msg", k: command.k, b: command.b };
      break;
    case "read":
      map = { e: "read", id: command.id };
      break;
    case "typing":
      map = { e: "typing", on: command.on };
      break;
  }
  return encode(map);
}

type Obj = Record<string, unknown>;

const isMap = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);

/** The map without its nil values: nil and a missing key are alike. */
function present(map: Obj): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(map)) if (v !== null && v !== undefined) out[k] = v;
  return out;
}

type Kind = "str" | "int" | "bool" | "map" | "strs";

function is(value: unknown, kind: Kind): boolean {
  switch (kind) {
    case "str":
      return typeof value === "string";
    case "int":
      return typeof value === "number" && Number.isInteger(value);
    case "bool":
      return typeof value === "boolean";
    case "map":
      return isMap(value);
    case "strs":
      return Array.isArray(value) && value.every((s) => typeof s === "string");
  }
}

/** Required keys must be there with their kind; optional ones, if there. */
function fits(map: Obj, required: Record<string, Kind>, optional: Record<string, Kind> = {}): boolean {
  for (const [key, kind] of Object.entries(required)) if (!is(map[key], kind)) return false;
  for (const [key, kind] of Object.entries(optional)) if (key in map && !is(map[key], kind)) return false;
  return true;
}

function card(value: Obj): Card | null {
  if (typeof value.card !== "string") return null;
  // Cards keep their nil values on the wire; absent and nil are alike.
  const c: Obj = { ...value };
  if (c.card === "product") c.image_url ??= null;
  if (c.card === "image") {
    c.url ??= null;
    c.thumb_url ??= null;
  }
  return c as unknown as Card;
}

function errorBody(value: unknown): ErrorBody | null {
  if (!isMap(value)) return null;
  const err = present(value);
  return fits(err, { code: "str", msg: "str" }, { retry: "int" }) ? (err as unknown as ErrorBody) : null;
}

function preview(value: unknown): Preview | null {
  if (!isMap(value)) return null;
  const last = present(value);
  return fits(last, { id: "str", ts: "int" }, { f: "str", t: "str", b: "str" }) ? (last as unknown as Preview) : null;
}

/** A server event, or `null` for anything this SDK does not know. */
export function decodeEvent(bytes: Uint8Array): ServerEvent | null {
  let value: unknown;
  try {
    // Exactly one map: trailing bytes throw too.
    value = decode(bytes);
  } catch {
    return null;
  }
  if (!isMap(value)) return null;
  const map = present(value);
  switch (map.e) {
    case "msg": {
      if (!fits(map, { th: "str", id: "str", ts: "int" }, { f: "str", t: "str", b: "str", c: "map", k: "str", n: "int" })) return null;
      if (map.c !== undefined) {
        const c = card(map.c as Obj);
        if (!c) return null;
        map.c = c;
      }
      return map as unknown as ServerEvent;
    }
    case "ack": {
      if (!fits(map, { th: "str", k: "str" }, { id: "str", ts: "int" })) return null;
      if (map.err !== undefined) {
        const err = errorBody(map.err);
        if (!err) return null;
        map.err = err;
      }
      return map as unknown as ServerEvent;
    }
    case "read":
      return fits(map, { th: "str", u: "str", id: "str", ts: "int" }, { n: "int" }) ? (map as unknown as ServerEvent) : null;
    case "typing":
      return fits(map, { th: "str", u: "str", on: "bool" }) ? (map as unknown as ServerEvent) : null;
    case "thread": {
      if (!fits(map, { th: "str", buyer: "str", seller: "str" }, { product: "str", order: "str", n: "int" })) return null;
      if (map.last !== undefined) {
        const last = preview(map.last);
        if (!last) return null;
        map.last = last;
      }
      return map as unknown as ServerEvent;
    }
    case "masked":
      return fits(map, { th: "str", k: "str", id: "str", b: "str", cats: "strs", msg: "str" }) ? (map as unknown as ServerEvent) : null;
    case "error":
      return fits(map, { code: "str", msg: "str" }, { retry: "int", topic: "str", ref: "str" }) ? (map as unknown as ServerEvent) : null;
    default:
      return null;
  }
}

/** What a send's answer said. */
export type SendAnswer =
  /** Stored: the message id and its time. */
  | { kind: "stored"; id: string; ts: number }
  /** Refused: nothing stored. */
  | { kind: "refused"; error: ErrorBody }
  /** Only "authorised and handed over" (a deployment with persistence
   * workers): the answer is the own copy or an `ack` on `u/<me>`. */
  | { kind: "handed_over" };

/** The parts of an MQTT 5 PUBACK that answer a `msg` (mqtt.js's packet). */
export interface PubackLike {
  reasonCode?: number;
  properties?: { reasonString?: string; userProperties?: Record<string, string | string[]> };
}

/** If a refusal lacks its `code` property, the reason code's class. */
const BY_REASON: Record<number, ErrorCode> = { 0x99: "malformed", 0x87: "forbidden", 0x97: "rate_limited", 0x80: "unavailable" };

/** Reads the answer a PUBACK carries: User Properties `id`/`ts` on success;
 * on a refusal (reason code ≥ 0x80) `code`, `retry` and the Reason String. */
export function pubackAnswer(puback: PubackLike): SendAnswer {
  const props = puback.properties?.userProperties ?? {};
  const prop = (name: string): string | undefined => {
    const v = props[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const reason = puback.reasonCode ?? 0;
  if (reason >= 0x80) {
    const code = (prop("code") ?? BY_REASON[reason] ?? "unavailable") as ErrorCode;
    const error: ErrorBody = { code, msg: puback.properties?.reasonString ?? "" };
    const retry = Number(prop("retry"));
    if (prop("retry") !== undefined && Number.isFinite(retry)) error.retry = retry;
    return { kind: "refused", error };
  }
  const id = prop("id");
  const ts = Number(prop("ts"));
  if (id && prop("ts") !== undefined && Number.isFinite(ts)) return { kind: "stored", id, ts };
  return { kind: "handed_over" };
}
