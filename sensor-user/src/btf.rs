//! Kernel struct offsets from the running kernel's BTF.
//!
//! rustc emits no CO-RE relocations (rust-lang/rust#158412) and aya 0.14
//! keeps BTF member offsets private, so this is a small reader of the BTF
//! format (Documentation/bpf/btf.rst): enough to find a member's byte offset,
//! descending into anonymous structs and unions.

use std::{collections::HashMap, path::Path};

use sensor_common::{KernelOffsets, OFFSET_MISSING};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no {0}, which the sensor needs")]
    Missing(String),
}

const BTF_MAGIC: u16 = 0xeb9f;

mod btf_kind {
    pub const INT: u32 = 1;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// The referenced type for typedef/const/volatile/restrict/type_tag.
    type_ref: u32,
    members: Vec<Member>,
}

/// The parsed types of one BTF blob.
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is the implicit `void`.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads `/sys/kernel/btf/vmlinux` (or another BTF file).
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        if types_end > data.len() {
            return Err(BtfError::Malformed("type section out of bounds"));
        }
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            type_ref: 0,
            members: Vec::new(),
        }];
        let mut at = types_start;
        while at < types_end {
            let name = u32_at(data, at)?;
            let info = u32_at(data, at + 4)?;
            let size_or_type = u32_at(data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                btf_kind::INT | btf_kind::VAR | btf_kind::DECL_TAG => at += 4,
                btf_kind::ARRAY => at += 12,
                btf_kind::STRUCT | btf_kind::UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(data, at + 8)?;
                        members.push(Member {
                            name: u32_at(data, at)?,
                            type_id: u32_at(data, at + 4)?,
                            // With kind_flag the top 8 bits are a bitfield size.
                            bit_offset: if kind_flag {
                                offset & 0x00ff_ffff
                            } else {
                                offset
                            },
                        });
                        at += 12;
                    }
                }
                btf_kind::ENUM | btf_kind::FUNC_PROTO => at += 8 * vlen,
                btf_kind::DATASEC | btf_kind::ENUM64 => at += 12 * vlen,
                _ => {}
            }
            types.push(Type {
                name,
                kind,
                type_ref: size_or_type,
                members,
            });
        }
        let mut btf = Self {
            strings,
            types,
            structs_by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, btf_kind::STRUCT | btf_kind::UNION) && !t.members.is_empty() {
                let name = btf.name(t.name).to_owned();
                if !name.is_empty() {
                    btf.structs_by_name.entry(name).or_insert(id as u32);
                }
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let Some(rest) = self.strings.get(off as usize..) else {
            return "";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// The type id of function `name` (a `BTF_KIND_FUNC`): how a program
    /// names a kfunc in its call.
    #[must_use]
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == btf_kind::FUNC && self.name(t.name) == name)
            .map(|id| id as u32)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                btf_kind::TYPEDEF
                | btf_kind::VOLATILE
                | btf_kind::CONST
                | btf_kind::RESTRICT
                | btf_kind::TYPE_TAG => id = t.type_ref,
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset and type of member `name` in `t`, looking inside anonymous
    /// structs and unions (e.g. `mm_struct`'s unnamed inner struct).
    fn member(&self, t: &Type, name: &str) -> Option<(u32, u32)> {
        for m in &t.members {
            let m_name = self.name(m.name);
            if m_name == name {
                return Some((m.bit_offset, m.type_id));
            }
            if m_name.is_empty()
                && let Some(inner) = self.resolve(m.type_id)
                && let Some((off, ty)) = self.member(inner, name)
            {
                return Some((m.bit_offset + off, ty));
            }
        }
        None
    }

    /// Byte offset of `path` (e.g. `["d_name", "name"]`) inside `struct`.
    pub fn offset(&self, strukt: &str, path: &[&str]) -> Option<u32> {
        let mut t = self
            .types
            .get(*self.structs_by_name.get(strukt)? as usize)?;
        let mut bits = 0;
        for (i, field) in path.iter().enumerate() {
            let (off, ty) = self.member(t, field)?;
            bits += off;
            if i + 1 < path.len() {
                t = self.resolve(ty)?;
            }
        }
        (bits % 8 == 0).then_some(bits / 8)
    }
}

/// The offsets the programs need. Fields the kernel lacks become
/// `OFFSET_MISSING`, except those without which nothing works.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let opt = |s: &str, p: &[&str]| btf.offset(s, p).unwrap_or(OFFSET_MISSING);
    let req = |s: &str, p: &[&str]| {
        btf.offset(s, p)
            .ok_or_else(|| BtfError::Missing(format!("struct {s}.{}", p.join("."))))
    };
    Ok(KernelOffsets {
        task_pid: req("task_struct", &["pid"])?,
        task_tgid: req("task_struct", &["tgid"])?,
        task_group_leader: req("task_struct", &["group_leader"])?,
        task_real_parent: req("task_struct", &["real_parent"])?,
        task_start_boottime: req("task_struct", &["start_boottime"])?,
        task_cred: opt("task_struct", &["cred"]),
        // CONFIG_AUDIT only.
        task_loginuid: opt("task_struct", &["loginuid"]),
        task_sessionid: opt("task_struct", &["sessionid"]),
        task_mm: req("task_struct", &["mm"])?,
        task_fs: opt("task_struct", &["fs"]),
        task_exit_code: req("task_struct", &["exit_code"])?,
        task_files: opt("task_struct", &["files"]),
        task_comm: req("task_struct", &["comm"])?,
        task_stack: opt("task_struct", &["stack"]),
        task_cgroups: opt("task_struct", &["cgroups"]),
        css_set_dfl_cgrp: opt("css_set", &["dfl_cgrp"]),
        cgroup_kn: opt("cgroup", &["kn"]),
        kernfs_node_id: opt("kernfs_node", &["id"]),
        files_fdt: opt("files_struct", &["fdt"]),
        fdtable_fd: opt("fdtable", &["fd"]),
        fdtable_max_fds: opt("fdtable", &["max_fds"]),
        cred_uid: opt("cred", &["uid"]),
        cred_gid: opt("cred", &["gid"]),
        cred_euid: opt("cred", &["euid"]),
        cred_egid: opt("cred", &["egid"]),
        mm_arg_start: req("mm_struct", &["arg_start"])?,
        mm_arg_end: req("mm_struct", &["arg_end"])?,
        mm_start_stack: opt("mm_struct", &["start_stack"]),
        mm_exe_file: opt("mm_struct", &["exe_file"]),
        file_f_path: opt("file", &["f_path"]),
        file_f_inode: opt("file", &["f_inode"]),
        file_f_mode: opt("file", &["f_mode"]),
        inode_i_ino: opt("inode", &["i_ino"]),
        inode_i_mode: opt("inode", &["i_mode"]),
        inode_i_uid: opt("inode", &["i_uid"]),
        inode_i_gid: opt("inode", &["i_gid"]),
        inode_i_sb: opt("inode", &["i_sb"]),
        sb_s_dev: opt("super_block", &["s_dev"]),
        path_mnt: opt("path", &["mnt"]),
        path_dentry: opt("path", &["dentry"]),
        fs_pwd: opt("fs_struct", &["pwd"]),
        dentry_parent: opt("dentry", &["d_parent"]),
        dentry_name: opt("dentry", &["d_name", "name"]),
        dentry_name_len: opt("dentry", &["d_name", "len"]),
        binprm_argc: opt("linux_binprm", &["argc"]),
        mount_parent: opt("mount", &["mnt_parent"]),
        mount_mountpoint: opt("mount", &["mnt_mountpoint"]),
        mount_mnt: opt("mount", &["mnt"]),
        vfsmount_root: opt("vfsmount", &["mnt_root"]),
        mount_mnt_id: opt("mount", &["mnt_id"]),
        file_private_data: opt("file", &["private_data"]),
        socket_sk: opt("socket", &["sk"]),
        sock_family: opt("sock", &["__sk_common", "skc_family"]),
        sock_daddr: opt("sock", &["__sk_common", "skc_daddr"]),
        sock_rcv_saddr: opt("sock", &["__sk_common", "skc_rcv_saddr"]),
        sock_dport: opt("sock", &["__sk_common", "skc_dport"]),
        sock_num: opt("sock", &["__sk_common", "skc_num"]),
        sock_v6_daddr: opt("sock", &["__sk_common", "skc_v6_daddr"]),
        sock_v6_rcv_saddr: opt("sock", &["__sk_common", "skc_v6_rcv_saddr"]),
        sock_type: opt("sock", &["sk_type"]),
        sock_protocol: opt("sock", &["sk_protocol"]),
        tcp_bytes_sent: opt("tcp_sock", &["bytes_sent"]),
        tcp_bytes_received: opt("tcp_sock", &["bytes_received"]),
        // The x86-64 syscall convention; opens read their flags here.
        syscall_regs: [
            req("pt_regs", &["di"])?,
            req("pt_regs", &["si"])?,
            req("pt_regs", &["dx"])?,
            req("pt_regs", &["r10"])?,
            req("pt_regs", &["r8"])?,
            req("pt_regs", &["r9"])?,
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob with `struct outer { int a; union { int b; struct { int c; int d; }; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0d\0".to_vec();
        let name = |s: &str| -> u32 {
            let pos = strings
                .windows(s.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=s.len()] == s.as_bytes() && w[s.len() + 1] == 0)
                .unwrap();
            (pos + 1) as u32
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[name("int"), btf_kind::INT << 24, 4, 32]);
        // 2: anonymous struct { int c @0; int d @32 }
        push(&[0, (btf_kind::STRUCT << 24) | 2, 8]);
        push(&[name("c"), 1, 0, name("d"), 1, 32]);
        // 3: anonymous union { int b; struct 2 }
        push(&[0, (btf_kind::UNION << 24) | 2, 8]);
        push(&[name("b"), 1, 0, 0, 2, 0]);
        // 4: struct outer { int a @0; union 3 @64 }
        push(&[name("outer"), (btf_kind::STRUCT << 24) | 2, 16]);
        push(&[name("a"), 1, 0, 0, 3, 64]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn members_inside_anonymous_unions_and_structs_are_found() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset("outer", &["a"]), Some(0));
        assert_eq!(btf.offset("outer", &["b"]), Some(8));
        assert_eq!(btf.offset("outer", &["d"]), Some(12));
        assert_eq!(btf.offset("outer", &["nope"]), None);
        assert_eq!(btf.offset("other", &["a"]), None);
    }

    #[test]
    fn truncated_and_foreign_blobs_are_refused() {
        let blob = sample();
        assert!(Btf::parse(&blob[..30]).is_err());
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
    }

    #[test]
    fn the_running_kernel_has_every_required_offset() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        assert!(path.exists(), "this sensor needs a kernel with BTF");
        let btf = Btf::from_file(path).unwrap();
        let off = kernel_offsets(&btf).unwrap();
        // qstr is { union { struct { hash; len }; u64 hash_len }; name }.
        assert_eq!(
            off.dentry_name,
            btf.offset("dentry", &["d_name"]).unwrap() + 8
        );
        // Little-endian: the length is the high half of hash_len.
        assert_eq!(
            off.dentry_name_len,
            btf.offset("dentry", &["d_name"]).unwrap() + 4
        );
        assert_ne!(off.mm_start_stack, OFFSET_MISSING);
        assert_ne!(off.binprm_argc, OFFSET_MISSING);
        assert!(off.mm_arg_end == off.mm_arg_start + 8);
    }
}
