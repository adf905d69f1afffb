//! The distributor's gRPC face, and the only module that uses tonic or builds a
//! `tonic::Status`:
//! - [`agent_sync`]: `seccomp.agent.v1.AgentSync`, one stream per node agent, feeding the hub;
//!   [`agent_wire`] serves it, with each set's files encoded once for every stream;
//! - [`distributor`]: `seccomp.distributor.v1.Distributor`, rollouts, nodes and rendering;
//! - [`registry_client`]: the registry as the [`crate::service::ProfileSource`];
//! - [`convert`]: proto messages to and from domain types.
//!
//! Handlers decode, call the service layer and encode; decisions stay in `service`.

mod agent_sync;
mod agent_wire;
mod convert;
mod distributor;
mod registry_client;

use std::sync::Arc;

use seccomp_proto::distributor::v1 as pb;
use tonic::Status;

use crate::error::Error;
use crate::hub::Hub;
use crate::service::Distributor;

pub use agent_sync::AgentSyncGrpc;
pub use agent_wire::AgentSyncService;
pub use convert::{strategy_from, target_from};
pub use distributor::{AuditRefusals, DistributorGrpc};
pub use registry_client::RegistrySource;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unavailable(m) => Status::unavailable(m),
            other => {
                tracing::error!(error = %other, "internal error");
                Status::internal(other.to_string())
            }
        }
    }
}

/// The agent stream service over `hub`, auditing its refusals in `distributor`'s log and
/// closing streams without a Hello within `hello_deadline`.
pub fn agent_service(
    hub: Arc<Hub>,
    distributor: Arc<Distributor>,
    events: Arc<crate::events::EventStore>,
    hello_deadline: std::time::Duration,
) -> AgentSyncService {
    AgentSyncService::new(AgentSyncGrpc::new(
        hub,
        Arc::new(AuditRefusals(distributor)),
        events,
        hello_deadline,
    ))
}

/// The rollout service over `distributor`; among replicas, `replica` passes commands to
/// the leader (and runs those passed to this one while it leads).
pub fn distributor_service(
    distributor: Arc<Distributor>,
    replica: Option<Arc<crate::replica::Replica>>,
) -> pb::distributor_server::DistributorServer<DistributorGrpc> {
    let grpc = match replica {
        Some(replica) => {
            replica.set_executor(Arc::new(DistributorGrpc::replicated(
                Arc::clone(&distributor),
                Arc::clone(&replica),
            )));
            DistributorGrpc::replicated(distributor, replica)
        }
        None => DistributorGrpc::new(distributor),
    };
    pb::distributor_server::DistributorServer::new(grpc)
}
