//! The functions a plugin exports (the WIT `handler` interface), found in
//! each instance and type-checked the first time it calls each.
//!
//! wasmtime's generated bindings look up and type-check all seven on every
//! instantiation: 4 % of a `request`-mode call, whose fresh instance calls
//! two or three of them (`init` and the phases it handles). A `pooled`
//! instance checks each once in its life, and the bindings did the same.

use super::wire::{RequestHead, ResponseHead};
use super::{BodyAction, BodyChunk, HeadersAction, PluginMetadata};
use wasmtime::component::{Component, ComponentExportIndex, Func, Instance, TypedFunc};
use wasmtime::AsContextMut;

/// The exported interface, as the WIT names it.
const HANDLER: &str = "chasqui:plugin/handler@0.3.0";

/// Declares, for each exported function: its index in [`HandlerIndices`], its
/// slot in [`HandlerFuncs`] and the accessor that fills the slot, all with
/// one signature, so that a slot is only ever read back at the type it was
/// checked against.
macro_rules! handler_functions {
    ($($field:ident = $wit:literal: ($($param:ty),*) -> $result:ty;)*) => {
        /// Where each handler function is among a component's exports.
        #[derive(Debug, Clone, Copy)]
        pub(super) struct HandlerIndices {
            $($field: ComponentExportIndex,)*
        }

        impl HandlerIndices {
            /// Finds the handler's functions in `component`, or says which is missing.
            pub(super) fn find(component: &Component) -> Result<HandlerIndices, String> {
                let handler = component
                    .get_export_index(None, HANDLER)
                    .ok_or_else(|| format!("does not export `{HANDLER}`"))?;
                Ok(HandlerIndices {
                    $($field: component
                        .get_export_index(Some(&handler), $wit)
                        .ok_or_else(|| format!("does not export `{HANDLER}#{}`", $wit))?,)*
                })
            }
        }

        /// One instance's handler functions, each checked on first use.
        #[derive(Debug)]
        pub(super) struct HandlerFuncs {
            instance: Instance,
            indices: HandlerIndices,
            $($field: Option<Func>,)*
        }

        impl HandlerFuncs {
            /// The handler of `instance`, an instance of the component
            /// `indices` were found in; nothing is looked up yet.
            pub(super) fn new(instance: Instance, indices: HandlerIndices) -> HandlerFuncs {
                HandlerFuncs {
                    instance,
                    indices,
                    $($field: None,)*
                }
            }

            /// Type-checks every function now (at load: a plugin whose
            /// exports do not match the contract is refused there).
            pub(super) fn check_all(&mut self, mut store: impl AsContextMut) -> wasmtime::Result<()> {
                $(self.$field(&mut store)?;)*
                Ok(())
            }

            $(
                #[doc = concat!("`", $wit, "`, typed.")]
                #[allow(clippy::extra_unused_lifetimes, reason = "the signature is written once for every function, with or without a borrowed parameter")]
                pub(super) fn $field<'a>(
                    &mut self,
                    store: impl AsContextMut,
                ) -> wasmtime::Result<TypedFunc<($($param,)*), ($result,)>> {
                    if let Some(func) = self.$field {
                        // SAFETY: `new_unchecked` requires that the function's
                        // component type is the one `TypedFunc` lowers and lifts.
                        // This slot is filled only below, with the function that
                        // `get_typed_func` found and checked against exactly this
                        // `TypedFunc` type (the macro gives the slot and this
                        // accessor one signature), in this same instance; a
                        // component's export types never change.
                        return Ok(unsafe { TypedFunc::new_unchecked(func) });
                    }
                    let typed = self
                        .instance
                        .get_typed_func::<($($param,)*), ($result,)>(store, &self.indices.$field)?;
                    self.$field = Some(*typed.func());
                    Ok(typed)
                }
            )*
        }
    };
}

handler_functions! {
    metadata = "metadata": () -> PluginMetadata;
    init = "init": (&'a str) -> Result<(), String>;
    on_request_headers = "on-request-headers": (&'a RequestHead) -> HeadersAction;
    on_request_body = "on-request-body": (&'a BodyChunk) -> BodyAction;
    on_response_headers = "on-response-headers": (&'a ResponseHead) -> HeadersAction;
    on_response_body = "on-response-body": (&'a BodyChunk) -> BodyAction;
    on_request_end = "on-request-end": () -> bool;
}
