//! `seccompctl render NAME[@VERSION] --selector ...`: fetch a version from the registry and
//! print the NodeConfigItem that would put it on the selected nodes, ready for
//! `kubectl apply -f -` or a GitOps repository. Rendering happens here, with the same code
//! the distributor uses; no distributor is needed.

use anyhow::{Result, anyhow};
use seccomp_proto::registry::v1 as pb;
use seccomp_rollout::nci::{self, ProfileRef};
use seccomp_rollout::policy::Policy;

use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, errln, out, outln};
use crate::rollout::TargetArgs;

/// Arguments of `seccompctl render`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile and version: `NAME`, `NAME@latest`, `NAME@3` or `NAME@sha256:<hex>`.
    #[arg(value_name = "NAME[@VERSION]")]
    reference: String,

    #[command(flatten)]
    target: TargetArgs,

    /// Where profiles may go on the nodes (as the distributor's and agents' --allowed-root):
    /// the NCI is refused unless its file lies under it, is named *.json and has a safe
    /// mode, as the distributor would refuse it. The default path is under it too.
    #[arg(long, env = "SECCOMP_ALLOWED_ROOT", default_value = seccomp_rollout::nci::DEFAULT_ROOT)]
    allowed_root: String,
}

/// Run the command against the registry at `url`. `-o table` (the default) prints YAML.
pub fn run(args: &Args, url: &str, format: Format) -> Result<Outcome> {
    let mut target = args.target.to_target()?;
    let policy = Policy::new(&args.allowed_root).map_err(|e| anyhow!("--allowed-root: {e}"))?;
    let (name, selector) = crate::profile::parse_reference(&args.reference)?;
    let runtime = client::runtime()?;
    let version = runtime.block_on(async {
        let mut registry = client::registry(url).await?;
        let reply = registry
            .get_profile(pb::GetProfileRequest {
                name: name.clone(),
                selector,
                include_content: Some(true),
            })
            .await;
        match reply {
            Ok(r) => r
                .into_inner()
                .profile
                .ok_or_else(|| anyhow!("the registry returned no profile"))
                .map(Some),
            Err(status) => client::refused(status, Service::Registry, url).map(|_| None),
        }
    })?;
    let Some(version) = version else {
        return Ok(Outcome::Negative);
    };
    if version.deprecated {
        errln!(
            "seccompctl: warning: profile \"{name}\" version {} is deprecated",
            version.version
        );
    }
    if target.path.is_none() {
        target.path = Some(format!("{}/{}.json", policy.allowed_root(), version.name));
    }
    let rendered = nci::render(
        ProfileRef {
            name: &version.name,
            version: version.version,
            content: &version.content,
        },
        &target,
        args.target.name.as_deref(),
        None,
    )?;
    if let Err(e) = policy.check(&rendered) {
        errln!("seccompctl: {e}");
        return Ok(Outcome::Negative);
    }
    match format {
        Format::Json => outln!("{}", rendered.to_json()?),
        Format::Table | Format::Yaml => out!("{}", rendered.to_yaml()?),
    }
    Ok(Outcome::Ok)
}
