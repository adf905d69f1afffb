//! The registry as the distributor's [`ProfileSource`]: `GetProfile` with content over one
//! lazily connected channel, its status codes mapped to the service's errors.

use std::time::Duration;

use seccomp_proto::registry::v1 as reg;
use seccomp_proto::registry::v1::registry_client::RegistryClient;
use seccomp_server::client::{Bearer, Credentials};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::BoxFuture;
use crate::error::Error;
use crate::service::{FetchedProfile, ProfileSource};

/// Fetches profile versions from the registry over gRPC (one lazily connected channel).
pub struct RegistrySource {
    credentials: Credentials,
    url: String,
}

impl RegistrySource {
    /// A source for the registry at `url`, as the caller `credentials` names (a viewer is
    /// enough). The URL and credentials are checked now; each fetch connects anew with the
    /// files as they are then (fetches are rare; renewed certificates and tokens are used).
    pub fn new(url: &str, credentials: &Credentials) -> Result<Self, Error> {
        credentials
            .endpoint(url)
            .map_err(|e| Error::invalid(format!("registry {url}: {e}")))?;
        Ok(RegistrySource {
            credentials: credentials.clone(),
            url: url.to_owned(),
        })
    }

    fn client(&self) -> Result<RegistryClient<InterceptedService<Channel, Bearer>>, Error> {
        let unavailable = |e: String| Error::Unavailable(format!("registry at {}: {e}", self.url));
        let endpoint = self
            .credentials
            .endpoint(&self.url)
            .map_err(|e| unavailable(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let bearer = self
            .credentials
            .bearer()
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(
            RegistryClient::with_interceptor(endpoint.connect_lazy(), bearer)
                .max_decoding_message_size(64 << 20),
        )
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
            let mut client = self.client()?;
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
