//! What the plugin knows about the request being handled: its environment, the
//! gateway's context and the time it arrived.

use chasqui_plugin_sdk::host::{self, context::Context};

/// The service environment of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// The test environment: the plugin answers on its own with synthetic data.
    Pruebas,
    /// Production: the plugin enforces its rules and passes requests to the upstream.
    Produccion,
}

impl Environment {
    /// The environment named by the gateway's context. Anything but `pruebas` is treated as
    /// production, so an unexpected name never yields synthetic answers.
    pub fn from_context(name: &str) -> Self {
        if name == "pruebas" {
            Environment::Pruebas
        } else {
            Environment::Produccion
        }
    }

    /// The environment's name, as the gateway and the configuration spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Pruebas => "pruebas",
            Environment::Produccion => "produccion",
        }
    }
}

/// The request's facts, read once in the request-headers phase.
#[derive(Debug, Clone)]
pub struct Call {
    /// Test or production.
    pub environment: Environment,
    /// Who calls which service, as the gateway established it.
    pub context: Context,
    /// When the request arrived (host wall clock, milliseconds since the epoch).
    pub now_ms: u64,
}

impl Call {
    /// The current request's facts, from the host.
    pub fn current() -> Self {
        let context = host::context::get();
        Call {
            environment: Environment::from_context(&context.environment),
            context,
            now_ms: host::clock::now_ms(),
        }
    }

    /// Whether the request runs in the test environment.
    pub fn is_test(&self) -> bool {
        self.environment == Environment::Pruebas
    }
}
