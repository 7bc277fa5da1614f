//! The DNS parser: the payload is a copy of whatever a process sent or
//! received on port 53, so it is attacker-controlled (any local process, or
//! a spoofed response). Input: one flags byte (bit 0: TCP, bit 1: cut
//! short), then the message bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_user::decode::dns::{parse, type_name};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, message)) = data.split_first() else {
        return;
    };
    let tcp = flags & 1 != 0;
    let cut = flags & 2 != 0;
    let Ok(m) = parse(message, tcp, cut) else {
        return;
    };
    // Only a copy cut short may end inside the answers.
    assert!(cut || !m.answers_cut, "answers_cut without cut");
    if let Some(q) = &m.question {
        assert!(
            !q.name.is_empty(),
            "an empty question name (the root is \".\")"
        );
        let _ = type_name(q.qtype);
    }
    for a in &m.answers {
        assert!(!a.name.is_empty(), "an empty answer name");
        let _ = type_name(a.rtype);
    }
});
