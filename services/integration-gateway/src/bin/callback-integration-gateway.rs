//! The integration gateway as its own process; configuration in the README.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    callback_host::run_binary::<callback_integration_gateway::IntegrationGatewayService>().await
}
