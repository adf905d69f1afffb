//! The agent's side of `seccomp.agent.v1`: desired sets from the wire (a set with an entry
//! of another type is refused whole), and observations, errors and drift reports to it.

use seccomp_proto::agent::v1 as pb;
use seccomp_proto::agent::v1::agent_message::Message as Up;

use crate::model::{
    DesiredFile, DesiredKind, DriftReport, ErrorCode, FileError, ObservedFile, ObservedKind,
};

pub(super) fn up(message: Up) -> pb::AgentMessage {
    pb::AgentMessage {
        message: Some(message),
    }
}

/// The entries of a `Desired`, or, when one is neither a file nor a directory, the errors and
/// every path (the whole set is refused, as for any other invalid entry).
pub(super) fn desired_from_proto(
    files: Vec<pb::DesiredFile>,
) -> Result<Vec<DesiredFile>, (Vec<FileError>, Vec<String>)> {
    let mut entries = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    let mut paths = Vec::with_capacity(files.len());
    for file in files {
        paths.push(file.path.clone());
        let kind = match pb::FileType::try_from(file.r#type) {
            Ok(pb::FileType::File) => DesiredKind::File,
            Ok(pb::FileType::Directory) => DesiredKind::Directory,
            other => {
                let name = other.map_or_else(
                    |_| format!("unknown type {}", file.r#type),
                    |t| t.as_str_name().to_owned(),
                );
                errors.push(FileError {
                    message: format!(
                        "{:?} is desired as {name}; only a file or a directory can be",
                        file.path
                    ),
                    path: file.path,
                    code: ErrorCode::InvalidEntry,
                });
                continue;
            }
        };
        entries.push(DesiredFile {
            path: file.path,
            kind,
            content: file.content.to_vec(),
            sha256: file.sha256,
            mode: file.mode,
            owner: file.owner,
            group: file.group,
        });
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err((errors, paths))
    }
}

pub(super) fn observed_to_proto(o: ObservedFile) -> pb::ObservedFile {
    let kind = match o.kind {
        None => pb::FileType::Unspecified,
        Some(ObservedKind::File) => pb::FileType::File,
        Some(ObservedKind::Directory) => pb::FileType::Directory,
        Some(ObservedKind::Symlink) => pb::FileType::Symlink,
        Some(ObservedKind::Other) => pb::FileType::Other,
    };
    pb::ObservedFile {
        path: o.path,
        exists: o.exists,
        r#type: kind as i32,
        sha256: o.sha256,
        size: o.size,
        mode: o.mode,
        uid: o.uid,
        gid: o.gid,
        owner: o.owner,
        group: o.group,
    }
}

pub(super) fn error_to_proto(e: FileError) -> pb::FileError {
    pb::FileError {
        path: e.path,
        code: e.code.as_str().to_owned(),
        message: e.message,
    }
}

/// A drift report as the protocol wants it: the drifted paths as found, before repair, and
/// every desired path as observed after it.
pub(super) fn drift_to_proto(report: DriftReport) -> Up {
    Up::Drift(pb::Drift {
        current: report.observed.into_iter().map(observed_to_proto).collect(),
        revision: report.revision,
        observed: report
            .drifted
            .into_iter()
            .map(|d| observed_to_proto(d.observed))
            .collect(),
        repaired: report.repaired,
        errors: report.errors.into_iter().map(error_to_proto).collect(),
    })
}
