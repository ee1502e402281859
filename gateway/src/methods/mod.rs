//! Methods answered by the gateway itself, one module per family.

pub mod absent;
pub mod approvals;
pub mod config;
pub mod cron_page;
pub mod devices;
pub mod diagnostics;
pub mod exec_policy;
pub mod health;
pub mod host;
pub mod live_nodes;
pub mod nodes;
pub mod presence;
pub mod subscriptions;
pub mod talk;

use serde_json::Value;

use argent_proto::catalog::GatewayMethod;
use argent_proto::errors::RpcError;

use crate::context::Ctx;
use crate::ws::session::Session;

/// Runs a gateway-local method (catalog placement `Gateway`). The `match` has no wildcard:
/// a catalog entry without a handler does not compile.
pub async fn call(
    ctx: &Ctx,
    session: &Session,
    name: &str,
    method: GatewayMethod,
    params: Value,
) -> Result<Value, RpcError> {
    use GatewayMethod as M;
    match method {
        M::Health => health::health(ctx, params),
        M::QuestionList => absent::question_list(params),
        M::UsageStatus => absent::usage_status(params),
        M::ThemesList => absent::themes_list(params),
        M::ToolsGithubStatus => absent::github_status(ctx, params),
        M::DoctorMemoryStatus => absent::memory_status(ctx, params),
        M::ApprovalHistory => absent::approval_history(params),
        M::WorktreesList => absent::worktrees_list(params),
        M::ArtifactsList => absent::artifacts_list(params),
        M::ExecApprovalGrantsList => absent::approval_grants(params),
        M::TranscriptsList => absent::meeting_transcripts(params),
        M::SkillsStatus => absent::skills_status(ctx, params),
        M::MigrationsMemoryPlan => absent::memory_migration_plan(ctx, params),
        M::UpdateStatus => absent::update_status(params),
        M::OpenclawApprovalList | M::PluginApprovalList => absent::approval_list(),
        M::SessionsObserverVisibility => absent::observer_visibility(params),
        M::SessionsCompanionState => absent::companion_state(params),
        M::SessionsBranchesList => absent::branches_list(params),
        M::ProgressCardGet => absent::progress_card(params),
        M::TalkCatalog => absent::talk_catalog(params),
        M::ChatMetadata => absent::chat_metadata(params),
        M::PluginsList => absent::plugins_list(params),
        M::SkillsSearch => absent::skills_search(params),
        M::SkillsLibraryList => absent::skills_library(params),
        M::ChannelsPairingList => absent::channels_pairing(params),
        M::PluginsCatalogBrowse => absent::plugins_catalog(params),
        M::SystemInfo => host::system_info(ctx, params),
        M::EnvironmentsList => host::environments_list(ctx, params),
        M::ModelsAuthStatus => host::models_auth_status(ctx, params),
        M::ConfigGet => config::get(ctx, session, params).await,
        M::ConfigSet => config::set(ctx, params).await,
        M::ConfigPatch => config::patch(ctx, params).await,
        M::ConfigApply => config::apply(ctx, params).await,
        M::ConfigSchema => config::schema(ctx, params),
        M::ConfigSchemaLookup => config::schema_lookup(params),
        M::Status => health::status(ctx, params),
        M::LogsTail => diagnostics::logs_tail(ctx, session, params),
        M::ExecApprovalRequest => approvals::request(ctx, params).await,
        M::ExecApprovalResolve => approvals::resolve(ctx, session, params).await,
        M::ExecApprovalList => approvals::list(ctx, params).await,
        M::ExecApprovalsGet => exec_policy::get(ctx, params).await,
        M::ExecApprovalsSet => exec_policy::set(ctx, params).await,
        M::DiagnosticsStability => diagnostics::stability(ctx, params),
        M::SessionsSubscribe => subscriptions::sessions(session, name, params, true),
        M::SessionsUnsubscribe => subscriptions::sessions(session, name, params, false),
        M::SessionsMessagesSubscribe => subscriptions::messages(ctx, session, name, params, true),
        M::SessionsMessagesUnsubscribe => {
            subscriptions::messages(ctx, session, name, params, false)
        }
        M::SystemPresence => presence::system_presence(ctx, session, params),
        M::SystemEvent => presence::system_event(ctx, session, params).await,
        M::TalkMode => talk::mode(ctx, session, params).await,
        M::DevicePairList => devices::pair_list(ctx, params).await,
        M::DevicePairApprove => devices::pair_approve(ctx, session, params).await,
        M::DevicePairReject => devices::pair_reject(ctx, params).await,
        M::DeviceTokenRotate => devices::token_rotate(ctx, session, params).await,
        M::DeviceTokenRevoke => devices::token_revoke(ctx, params).await,
        M::NodePairRequest => nodes::pair_request(ctx, params).await,
        M::NodePairList => nodes::pair_list(ctx, params).await,
        M::NodePairApprove => nodes::pair_approve(ctx, params).await,
        M::NodePairReject => nodes::pair_reject(ctx, params).await,
        M::NodePairVerify => nodes::pair_verify(ctx, params).await,
        M::NodeRename => nodes::rename(ctx, params).await,
        M::NodeList => live_nodes::list(ctx, params).await,
        M::NodeDescribe => live_nodes::describe(ctx, params).await,
        M::NodeInvoke => live_nodes::invoke(ctx, params).await,
        M::NodeInvokeResult => live_nodes::invoke_result(ctx, session, params).await,
        M::NodeEvent => live_nodes::node_event(ctx, session, params),
        M::SkillsBins => live_nodes::skills_bins(params),
    }
}
