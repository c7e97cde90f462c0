// A stand-in for mqtt.js's MqttClient, for unit tests of ChatClient: it
// records what the client subscribes to and publishes, and answers the
// way mqtt.js 5.16 does (node_modules/mqtt/build/lib/handlers/ack.js and
// index.js): every incoming packet is first emitted as `packetreceive`;
// then a PUBACK with a reason code >= 0x80 calls the publish callback with
// an error and the PUBACK, any other PUBACK with no error and the stored
// PUBLISH (not the PUBACK). The live test (test/live.test.ts) runs the
// same code on the real mqtt.js against chatd.
import { EventEmitter } from "node:events";
import type { IClientOptions, MqttClient } from "mqtt";

export interface Published {
  topic: string;
  bytes: Uint8Array;
  qos: number;
  messageId?: number;
  callback?: (err?: Error, packet?: unknown) => void;
}

export class FakeMqtt extends EventEmitter {
  readonly subscriptions: { topic: string; options: Record<string, unknown> }[] = [];
  readonly published: Published[] = [];
  ended = false;
  private nextId = 1;
  readonly stream = { destroy: () => this.emit("close") };

  constructor(
    readonly url: string,
    readonly options: IClientOptions,
  ) {
    super();
  }

  subscribe(topic: string, options: Record<string, unknown>, callback?: (err: Error | null, granted?: { topic: string; qos: number }[]) => void): this {
    this.subscriptions.push({ topic, options });
    queueMicrotask(() => callback?.(null, [{ topic, qos: 1 }]));
    return this;
  }

  publish(topic: string, payload: Uint8Array, options: { qos: number }, callback?: (err?: Error, packet?: unknown) => void): this {
    const messageId = options.qos > 0 ? this.nextId++ : undefined;
    this.published.push({ topic, bytes: new Uint8Array(payload), qos: options.qos, messageId, callback });
    return this;
  }

  end(): this {
    this.ended = true;
    return this;
  }

  /** The server's PUBACK for a QoS 1 publish, as mqtt.js delivers it. */
  puback(p: Published, reasonCode = 0, properties?: { reasonString?: string; userProperties?: Record<string, string | string[]> }): void {
    const packet = { cmd: "puback", messageId: p.messageId, reasonCode, properties };
    this.emit("packetreceive", packet);
    if (reasonCode >= 0x80) {
      const err = Object.assign(new Error(`Publish error: ${reasonCode}`), { code: reasonCode });
      p.callback?.(err, packet);
    } else {
      p.callback?.(undefined, { cmd: "publish", topic: p.topic, messageId: p.messageId, qos: 1, payload: p.bytes });
    }
  }

  /** A PUBLISH from the server. */
  deliver(topic: string, bytes: Uint8Array): void {
    this.emit("message", topic, Buffer.from(bytes), { cmd: "publish", topic });
  }

  asClient(): MqttClient {
    return this as unknown as MqttClient;
  }
}

/** `connectMqtt` for ChatClient that hands out fakes and keeps them. */
export function fakeConnector() {
  const made: FakeMqtt[] = [];
  const connect = (url: string, options: IClientOptions) => {
    const fake = new FakeMqtt(url, options);
    made.push(fake);
    return fake.asClient();
  };
  return { made, connect };
}

export async function until<T>(what: string, check: () => T | undefined | false, ms = 3_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
