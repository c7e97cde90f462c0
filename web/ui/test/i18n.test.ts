import { describe, expect, it } from "vitest";
import { ago, clock, langOf, price, strings } from "../src/i18n.js";

describe("user-facing text", () => {
  it("has every string in Vietnamese and English, and they differ", () => {
    const vi = strings("vi");
    const en = strings("en");
    expect(Object.keys(en).sort()).toEqual(Object.keys(vi).sort());
    for (const key of Object.keys(vi) as (keyof typeof vi)[]) {
      const a = vi[key];
      const b = en[key];
      const render = (v: unknown) => (typeof v === "function" ? (v as (x: unknown) => string)(3) : String(v));
      expect(render(a).length, key).toBeGreaterThan(0);
      expect(render(b).length, key).toBeGreaterThan(0);
      if (key !== "chat") expect(render(a), key).not.toEqual(render(b));
    }
    expect(vi.seen).toBe("Đã xem");
    expect(vi.typing("Shop Áo Đẹp")).toBe("Shop Áo Đẹp đang soạn tin…");
  });

  it("chooses Vietnamese unless the locale says English", () => {
    expect(langOf("vi-VN")).toBe("vi");
    expect(langOf(undefined)).toBe("vi");
    expect(langOf("fr")).toBe("vi");
    expect(langOf("en-US")).toBe("en");
  });

  it("formats prices, times and durations per language", () => {
    expect(price("vi", 149000, "VND").replace(/\s/g, " ")).toBe("149.000 ₫");
    expect(price("en", 149000, "VND")).toBe("₫149,000");
    const now = new Date(2026, 10, 26, 15, 0).getTime();
    expect(ago("vi", now - 5 * 60_000, now)).toBe("5 phút");
    expect(ago("en", now - 3 * 3_600_000, now)).toBe("3 h");
    expect(ago("vi", now - 49 * 3_600_000, now)).toBe("2 ngày");
    expect(clock("vi", new Date(2026, 10, 26, 9, 5).getTime(), now)).toBe("09:05");
    expect(clock("vi", new Date(2026, 10, 24, 9, 5).getTime(), now)).toBe("09:05 24/11");
  });
});
