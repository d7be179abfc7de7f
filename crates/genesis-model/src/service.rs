//! The compose services of the model: one type for every service the compose file runs, with
//! what the xtask's service layer needs to know of each.

use crate::{self as model, Env, Image, Storage};

// ---- services -----------------------------------------------------------------------------

/// A compose service of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    TestDb,
    DevDb,
    Redis,
    Api,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::TestDb,
        Service::DevDb,
        Service::Redis,
        Service::Api,
    ];

    /// The service that runs `env`'s database; none for a managed one.
    pub fn database(env: Env) -> Option<Service> {
        match env {
            Env::Test => Some(Service::TestDb),
            Env::Dev => Some(Service::DevDb),
            Env::Prod => None,
        }
    }

    pub fn env(self) -> Option<Env> {
        match self {
            Service::TestDb => Some(Env::Test),
            Service::DevDb => Some(Env::Dev),
            Service::Redis | Service::Api => None,
        }
    }

    /// The model's compose database this service runs, if it runs one.
    pub fn compose_db(self) -> Option<model::ComposeDb> {
        match self {
            Service::TestDb => Some(model::TEST_DB_SERVICE),
            Service::DevDb => Some(model::DEV_DB_SERVICE),
            Service::Redis | Service::Api => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::TestDb => model::TEST_DB_SERVICE.service,
            Service::DevDb => model::DEV_DB_SERVICE.service,
            Service::Redis => model::REDIS.service,
            Service::Api => model::API.service,
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn image(self) -> Image {
        match self {
            Service::TestDb | Service::DevDb => model::POSTGRES_IMAGE,
            Service::Redis => model::REDIS_IMAGE,
            Service::Api => model::API_IMAGE,
        }
    }

    /// The host port of the default stack.
    pub fn model_port(self) -> u16 {
        match self {
            Service::Redis => model::REDIS.host_address.port,
            Service::Api => model::API.port,
            Service::TestDb | Service::DevDb => self
                .compose_db()
                .map_or(model::POSTGRES_PORT, |db| db.host_address.port),
        }
    }

    /// The port the service listens on inside its container.
    pub fn container_port(self) -> u16 {
        match self {
            Service::TestDb | Service::DevDb => model::POSTGRES_PORT,
            Service::Redis => model::REDIS.network_address.port,
            Service::Api => model::API.port,
        }
    }

    /// The storage of the service's data.
    pub fn storage(self) -> Storage {
        self.compose_db()
            .map_or(Storage::Disposable, |db| db.storage)
    }
}
