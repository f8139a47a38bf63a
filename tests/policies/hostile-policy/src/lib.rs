//! A policy that misbehaves on purpose, as its settings say, so the tests can show that
//! `sidecarctl serve` contains it: `spin` loops forever, `grow` allocates without end,
//! `stack` recurses until the stack is gone, `trap` traps, `huge` answers 50 MB,
//! `hostcalls` calls the host in a loop, `pointers` hands the host an answer that lies
//! outside its memory, `deadlineWords` fails with an error of its own that reads like a
//! host's deadline. Anything else accepts.

use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{protocol_version_guest, settings::Validatable, validate_settings};

use guest::prelude::*;
use serde::Deserialize;
use std::hint::black_box;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    behaviour: Behaviour,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Behaviour {
    #[default]
    Accept,
    Spin,
    Grow,
    Stack,
    Trap,
    Huge,
    Hostcalls,
    Pointers,
    DeadlineWords,
}

// The waPC import the SDK answers through, called here with a span the guest does not have.
#[link(wasm_import_module = "wapc")]
unsafe extern "C" {
    fn __guest_response(ptr: *const u8, len: usize);
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    settings: Settings,
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

/// Deep enough frames that no optimiser turns the recursion into a loop; it never
/// returns, which is the point.
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: [u8; 256]) -> u64 {
    let pad = black_box(pad);
    recurse(depth + 1, pad) + u64::from(pad[(depth % 256) as usize])
}

fn validate(payload: &[u8]) -> CallResult {
    let behaviour = serde_json::from_slice::<Payload>(payload)
        .map(|p| p.settings.behaviour)
        .unwrap_or_default();
    match behaviour {
        Behaviour::Accept => {}
        Behaviour::DeadlineWords => {
            return Err("execution deadline exceeded, says the policy".into());
        }
        Behaviour::Spin => loop {
            black_box(());
        },
        Behaviour::Grow => {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            loop {
                kept.push(vec![1u8; 1 << 20]);
                black_box(&kept);
            }
        }
        Behaviour::Stack => {
            black_box(recurse(0, [0; 256]));
        }
        // The wasm profile aborts on panic: an `unreachable` trap.
        Behaviour::Trap => panic!("trapping on purpose"),
        Behaviour::Huge => {
            let mut answer = Vec::with_capacity(50 << 20);
            answer.extend_from_slice(br#"{"accepted":false,"message":""#);
            answer.resize((50 << 20) - 2, b'x');
            answer.extend_from_slice(br#""}"#);
            return Ok(answer);
        }
        Behaviour::Pointers => {
            // 64 KiB from the top of wasm32's address space: past any memory this
            // module can have under a limit below 4 GiB.
            // SAFETY: the host reads the span; in a wasm guest that is not a pointer the
            // guest dereferences.
            unsafe { __guest_response(0xFFFF_0000usize as *const u8, 4096) };
        }
        Behaviour::Hostcalls => loop {
            let _ = host_call("kubewarden", "tracing", "log", b"{\"level\":\"info\"}");
            let _ = host_call(
                "kubewarden",
                "kubernetes",
                "list_resources_by_namespace",
                b"{}",
            );
        },
    }
    Ok(br#"{"accepted":true,"message":null,"code":null,"mutated_object":null,"audit_annotations":null,"warnings":null}"#.to_vec())
}
