//! The registry as the distributor's [`ProfileSource`]: `GetProfile` with content over one
//! lazily connected channel, its status codes mapped to the service's errors.

use std::time::Duration;

use seccomp_proto::registry::v1 as reg;
use seccomp_server::client::{Bearer, Credentials};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::BoxFuture;
use crate::error::Error;
use crate::service::{FetchedProfile, ProfileSource};

/// Fetches profile versions from the registry over gRPC (one lazily connected channel).
pub struct RegistrySource {
    client: reg::registry_client::RegistryClient<InterceptedService<Channel, Bearer>>,
    url: String,
}

impl RegistrySource {
    /// A source for the registry at `url`, as the caller `credentials` names (a viewer is
    /// enough); connects on first use, reconnects as needed.
    pub fn new(url: &str, credentials: &Credentials) -> Result<Self, Error> {
        let endpoint = credentials
            .endpoint(url)
            .map_err(|e| Error::invalid(format!("registry {url}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let client = reg::registry_client::RegistryClient::with_interceptor(
            endpoint.connect_lazy(),
            credentials.bearer(),
        );
        Ok(RegistrySource {
            client: client.max_decoding_message_size(64 << 20),
            url: url.to_owned(),
        })
    }
}

impl ProfileSource for RegistrySource {
    fn fetch<'a>(
        &'a self,
        name: &'a str,
        version: Option<u64>,
    ) -> BoxFuture<'a, Result<FetchedProfile, Error>> {
        Box::pin(async move {
            let selector = match version {
                Some(v) => reg::get_profile_request::Selector::Version(v),
                None => reg::get_profile_request::Selector::Latest(true),
            };
            let mut client = self.client.clone();
            let reply = client
                .get_profile(reg::GetProfileRequest {
                    name: name.to_owned(),
                    selector: Some(selector),
                    include_content: Some(true),
                })
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::NotFound => Error::NotFound(s.message().to_owned()),
                    tonic::Code::InvalidArgument => Error::invalid(s.message()),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => Error::Unavailable(
                        format!("registry at {} unavailable: {}", self.url, s.message()),
                    ),
                    _ => Error::Unavailable(format!("registry at {}: {}", self.url, s.message())),
                })?;
            let p = reply
                .into_inner()
                .profile
                .ok_or_else(|| Error::Unavailable("registry returned no profile".into()))?;
            Ok(FetchedProfile {
                name: p.name,
                version: p.version,
                digest: p.digest,
                content: p.content,
                deprecated: p.deprecated,
            })
        })
    }
}
