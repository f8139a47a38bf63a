// A waPC host in the page for the very .wasm modules a cluster runs, the way Kubewarden's
// policy-server runs them: the module compiled once, a fresh instance for every call,
// `wapc_init` before the call, the guest pulling the operation and payload with
// `__guest_request` and answering with `__guest_response` or `__guest_error`.
// WASI preview 1 comes from @bjorn3/browser_wasi_shim (the policies import random_get,
// environ_get, environ_sizes_get, fd_write and proc_exit); stdout and stderr go to the
// call's log. Host calls other than logging are refused, as the policies make none.

import { WASI, OpenFile, File, ConsoleStdout } from "./vendor/browser_wasi_shim/index.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class WapcError extends Error {}

export class Policy {
  constructor(name, module) {
    this.name = name;
    this.module = module;
  }

  static async load(name, url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return new Policy(name, await WebAssembly.compile(await response.arrayBuffer()));
  }

  /** Calls `operation` with `payload` (a string) on a fresh instance; the answer as text. */
  async call(operation, payload) {
    const state = {
      op: encoder.encode(operation),
      msg: encoder.encode(payload),
      response: null,
      error: null,
      hostResponse: new Uint8Array(),
      hostError: new Uint8Array(),
      logs: [],
    };
    let instance;
    const memory = () => new Uint8Array(instance.exports.memory.buffer);
    const read = (ptr, len) => memory().slice(ptr, ptr + len);
    const log = (line) => state.logs.push(line);
    const wasi = new WASI([], [], [
      new OpenFile(new File([])),
      ConsoleStdout.lineBuffered(log),
      ConsoleStdout.lineBuffered(log),
    ]);
    const wapc = {
      __guest_request(opPtr, ptr) {
        memory().set(state.op, opPtr);
        memory().set(state.msg, ptr);
      },
      __guest_response(ptr, len) {
        state.response = read(ptr, len);
      },
      __guest_error(ptr, len) {
        state.error = read(ptr, len);
      },
      __host_call(bdPtr, bdLen, nsPtr, nsLen, opPtr, opLen, ptr, len) {
        const binding = decoder.decode(read(bdPtr, bdLen));
        const namespace = decoder.decode(read(nsPtr, nsLen));
        if (binding === "kubewarden" && namespace === "tracing") {
          log(decoder.decode(read(ptr, len)));
          state.hostResponse = new Uint8Array();
          return 1;
        }
        state.hostError = encoder.encode(`host call ${binding}/${namespace} is not available in the playground`);
        return 0;
      },
      __host_response(ptr) {
        memory().set(state.hostResponse, ptr);
      },
      __host_response_len() {
        return state.hostResponse.length;
      },
      __host_error(ptr) {
        memory().set(state.hostError, ptr);
      },
      __host_error_len() {
        return state.hostError.length;
      },
      __console_log(ptr, len) {
        log(decoder.decode(read(ptr, len)));
      },
    };
    instance = await WebAssembly.instantiate(this.module, {
      wasi_snapshot_preview1: wasi.wasiImport,
      wapc,
    });
    wasi.inst = instance;
    if (instance.exports._start) {
      wasi.start(instance);
    } else {
      wasi.initialize(instance);
    }
    if (instance.exports.wapc_init) instance.exports.wapc_init();
    let ok;
    try {
      ok = instance.exports.__guest_call(state.op.length, state.msg.length);
    } catch (trap) {
      throw new WapcError(`${this.name}: the guest trapped: ${trap}`);
    }
    if (ok === 1 && state.response !== null) return decoder.decode(state.response);
    const message = state.error ? decoder.decode(state.error) : "the guest returned no response";
    throw new WapcError(`${this.name}: ${message}`);
  }
}
