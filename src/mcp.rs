//! `greenlight mcp`: an MCP server over stdio with one tool, `request_approval`, so any
//! MCP host can put a person (in Slack or on the review page) in the loop before it acts.
//!
//! Built on `rmcp`, the official Rust SDK of the Model Context Protocol. The tool asks
//! the service through the Rust client, exactly like `greenlight request`
//! (`GREENLIGHT_URL`, `GREENLIGHT_API_TOKEN`), and waits for the decision:
//!
//! - arguments: `code` (the action or code to approve; `action` is accepted too),
//!   optional `language`, `title`, `context` (any JSON) and `timeout_secs`;
//! - result (structured content, also as JSON text): `approved`, `reason`, `status`
//!   (`approved`, `denied`, `expired`, `cancelled`, or `error` when no decision could
//!   be had) and `request_id`.
//!
//! It fails closed: an unreachable service, a rejected token or malformed arguments
//! is `approved: false` with a reason naming the problem, never a tool error an agent
//! might retry past.

use std::{process::ExitCode, sync::Arc};

use greenlight_client::{cli::ServiceArgs, ApprovalRequest, Client};
use rmcp::{
    handler::server::{
        router::tool::ToolRouter,
        wrapper::{Json, Parameters},
    },
    model::{Implementation, ServerCapabilities, ServerInfo},
    schemars::{self, JsonSchema},
    tool, tool_handler, tool_router, ServerHandler, ServiceExt,
};
use serde::{Deserialize, Serialize};

/// Arguments of `greenlight mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    #[command(flatten)]
    service: ServiceArgs,
}

/// The arguments of `request_approval`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApprovalParams {
    /// The action or code a person must approve, shown verbatim in Slack.
    #[serde(alias = "action")]
    pub code: String,
    /// Fence language of the code, e.g. "bash" or "python".
    #[serde(default)]
    pub language: Option<String>,
    /// One line for the Slack message (at most 200 characters).
    #[serde(default)]
    pub title: Option<String>,
    /// Anything that helps the reviewer decide (any JSON value).
    #[serde(default)]
    pub context: Option<serde_json::Value>,
    /// Seconds a person has to decide (default: the service's); no decision denies.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// `request_approval`'s arguments as the host sent them: parsed, or why they do not
/// parse. rmcp refuses arguments its type cannot read with a tool error of its own
/// (`failed to deserialize parameters…`), which an agent may take for a glitch to
/// retry past; this type reads anything, so that malformed arguments get the same
/// fail-closed result as every other problem. Its JSON Schema is
/// [`ApprovalParams`]'s: hosts still see which arguments exist and which are required.
#[derive(Debug)]
pub struct Arguments(Result<ApprovalParams, String>);

impl<'de> Deserialize<'de> for Arguments {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Self(
            serde_json::from_value(value).map_err(|error| error.to_string()),
        ))
    }
}

impl JsonSchema for Arguments {
    fn inline_schema() -> bool {
        ApprovalParams::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        ApprovalParams::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        ApprovalParams::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        ApprovalParams::json_schema(generator)
    }
}

/// The result of `request_approval`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalResult {
    /// True only when a person (or a policy rule) approved.
    pub approved: bool,
    /// Why: the reviewer's words, the rule, the timeout, or the error.
    pub reason: String,
    /// approved, denied, expired, cancelled, or error (no decision could be had).
    pub status: String,
    /// The greenlight request id, when one was made.
    pub request_id: Option<String>,
}

/// The MCP server: the client it asks with and its one tool.
#[derive(Clone)]
pub struct Gate {
    client: Arc<Client>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Gate {
    /// The server for `client`, already configured with the service's URL and the
    /// agent's token; every tool call asks through it.
    pub fn new(client: Client) -> Self {
        Self {
            client: Arc::new(client),
            tool_router: Self::tool_router(),
        }
    }

    /// Asks a person (in Slack or on the review page) and waits for the decision.
    #[tool(
        description = "Ask a person (in Slack or on greenlight's review page) to approve an action or code before you run it, and wait for the decision. Run the action only if `approved` is true; otherwise tell the user the `reason`."
    )]
    async fn request_approval(
        &self,
        Parameters(Arguments(params)): Parameters<Arguments>,
    ) -> Json<ApprovalResult> {
        let params = match params {
            Ok(params) => params,
            Err(problem) => {
                return Json(ApprovalResult {
                    approved: false,
                    reason: format!(
                        "greenlight: the request_approval arguments are not valid ({problem}); denied by default (fail closed)"
                    ),
                    status: "error".into(),
                    request_id: None,
                })
            }
        };
        let request = ApprovalRequest {
            code: params.code,
            language: params.language,
            title: params.title,
            context: params.context,
            timeout_secs: params.timeout_secs,
            ..ApprovalRequest::default()
        };
        let response = self.client.request_approval(request).await;
        Json(ApprovalResult {
            approved: response.approved,
            reason: response.reason,
            status: response.status.as_str().to_owned(),
            request_id: response.id,
        })
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Gate {
    fn get_info(&self) -> ServerInfo {
        ServerInfo::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("greenlight", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Call request_approval before any action that needs a person's approval; act only when approved is true.",
            )
    }
}

/// Serves MCP on stdin/stdout until the client closes the connection. Logs go to
/// stderr (stdout is the protocol).
pub async fn serve(args: McpArgs) -> anyhow::Result<ExitCode> {
    let client = args.service.client_builder()?.build()?;
    let running = Gate::new(client)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the MCP session: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("the MCP session failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
