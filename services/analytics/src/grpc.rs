//! The gRPC layer: converts wire types to domain types and back, nothing else.

use callback_kit::security::authorized;
use callback_kit::wire;
use callback_proto::v1::analytics_server::{Analytics as AnalyticsApi, AnalyticsServer};
use callback_proto::v1::{
    ExportCsvResponse, MetricValue, MonthlySummaryRequest, MonthlySummaryResponse,
    PublishAnalyticsSettingsRequest, PublishAnalyticsSettingsResponse, ReportRequest,
    ReportResponse, ReportRow, SpotCheckItem, SpotCheckRequest, SpotCheckResponse,
};
use tonic::{Request, Response, Status};

use crate::app::Analytics;
use crate::report::{Report, ReportSpec};
use crate::Error;

pub fn service(app: Analytics) -> AnalyticsServer<Api> {
    AnalyticsServer::new(Api { app })
}

pub struct Api {
    app: Analytics,
}

fn spec(request: &ReportRequest) -> Result<ReportSpec, Status> {
    let mut filters: Vec<(String, String)> = request
        .filters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    filters.sort();
    ReportSpec::new(
        &request.tenant_id,
        &request.report,
        &request.group_by,
        &request.granularity,
        wire::optional_bound("from", request.from.as_ref())?,
        wire::optional_bound("to", request.to.as_ref())?,
        &filters,
    )
    .map_err(|e| {
        Error::InvalidArgument {
            field: e.field,
            reason: e.reason,
        }
        .into()
    })
}

fn wire_report(report: &Report) -> ReportResponse {
    ReportResponse {
        dimensions: report.dimensions.iter().map(|d| (*d).to_owned()).collect(),
        metrics: report.metrics.iter().map(|m| (*m).to_owned()).collect(),
        rows: report
            .rows
            .iter()
            .map(|row| ReportRow {
                keys: row.keys.clone(),
                values: row
                    .figures
                    .iter()
                    .map(|f| MetricValue {
                        defined: f.value.is_some(),
                        value: f.value.unwrap_or(0.0),
                        sample_size: f.sample_size,
                        too_few: f.too_few,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl AnalyticsApi for Api {
    async fn publish_analytics_settings(
        &self,
        request: Request<PublishAnalyticsSettingsRequest>,
    ) -> Result<Response<PublishAnalyticsSettingsResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let version = self
            .app
            .publish_settings(&r.tenant_id, &r.settings_json)
            .await?;
        Ok(Response::new(PublishAnalyticsSettingsResponse { version }))
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let spec = spec(&r)?;
        let report = self.app.report(&spec).await?;
        Ok(Response::new(wire_report(&report)))
    }

    async fn export_csv(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ExportCsvResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let spec = spec(&r)?;
        let report = self.app.report(&spec).await?;
        Ok(Response::new(ExportCsvResponse {
            csv: report.to_csv(),
        }))
    }

    async fn spot_check_sample(
        &self,
        request: Request<SpotCheckRequest>,
    ) -> Result<Response<SpotCheckResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let check = self
            .app
            .spot_check(&r.tenant_id, &r.department, &r.month)
            .await?;
        Ok(Response::new(SpotCheckResponse {
            rate: check.rate,
            population: check.population,
            sample: check
                .sample
                .into_iter()
                .map(|item| SpotCheckItem {
                    callback_id: item.callback_id.to_string(),
                    department: item.department,
                    agent_id: item.agent_id,
                    reviewer: item.reviewer.unwrap_or_default(),
                    reached_at: Some(wire::timestamp(item.reached_at)),
                })
                .collect(),
        }))
    }

    async fn monthly_summary(
        &self,
        request: Request<MonthlySummaryRequest>,
    ) -> Result<Response<MonthlySummaryResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let summary = self.app.monthly_summary(&r.tenant_id, &r.month).await?;
        let section = |i: usize| summary.reports.get(i).map(wire_report);
        Ok(Response::new(MonthlySummaryResponse {
            month: summary.month.clone(),
            ready_at: Some(wire::timestamp(summary.ready_at)),
            ready: summary.ready,
            callbacks: section(0),
            satisfaction: section(1),
            complaints: section(2),
            honesty: section(3),
        }))
    }
}
