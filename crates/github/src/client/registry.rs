//! The [`RunnerRegistry`] calls, each one request (or a few) through the client's request loop
//! ([`GithubClient::send`]), which owns authentication, rate limits and retries.

use super::*;

fn to_registered(r: RunnerBody) -> RegisteredRunner {
    RegisteredRunner {
        id: RunnerId(r.id),
        name: RunnerName(r.name),
        online: r.status.eq_ignore_ascii_case("online"),
        busy: r.busy,
        labels: r.labels.into_iter().map(|l| l.name).collect(),
    }
}

#[async_trait]
impl RunnerRegistry for GithubClient {
    /// `POST /orgs/{org}/actions/runners/generate-jitconfig` or
    /// `POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig`.
    ///
    /// A 409 ("name already exists") right after an attempt that got a 5xx or timed out means
    /// that attempt most likely created the runner but its JIT config was lost with the
    /// response. Runner names are unique per instance, so the client deletes that never-started
    /// runner (found with `?name=`) and generates the config once more. A 409 with no
    /// ambiguous attempt before it is a real collision and is returned as a permanent error.
    async fn generate_jit_config(&self, req: &JitRequest) -> Result<JitConfig, PortError> {
        const OP: &str = "github:generate-jitconfig";
        if req.labels.is_empty() {
            return Err(PortError::permanent(
                OP,
                Some("invalid-input".into()),
                "a runner needs at least one label",
            ));
        }
        if req.name.as_str().trim().is_empty() {
            return Err(PortError::permanent(OP, Some("invalid-input".into()), "a runner needs a name"));
        }
        let (owner, repo) = match &req.scope {
            RunnerScopeTarget::Org(org) => (org.as_str(), None),
            RunnerScopeTarget::Repo(full) => {
                let (o, r) = split_repo(OP, full)?;
                (o, Some(r))
            }
        };
        check_segment(OP, "owner", owner)?;
        if let Some(r) = repo {
            check_segment(OP, "repository", r)?;
        }
        let installation = match req.installation {
            Some(id) => {
                self.remember_installation(owner, id);
                id
            }
            None => self.installation_for(OP, owner, repo).await?,
        };
        // Repository runners outside an organisation have only the default group (id 1).
        let group = if repo.is_some() && req.runner_group.eq_ignore_ascii_case("default") {
            RunnerGroupId(1)
        } else {
            self.runner_group(OP, owner, &req.runner_group, installation).await?
        };
        let (path, list_path) = match repo {
            Some(r) => (
                format!("/repos/{owner}/{r}/actions/runners/generate-jitconfig"),
                format!("/repos/{owner}/{r}/actions/runners"),
            ),
            None => (
                format!("/orgs/{owner}/actions/runners/generate-jitconfig"),
                format!("/orgs/{owner}/actions/runners"),
            ),
        };
        let body = json!({
            "name": req.name.as_str(),
            "runner_group_id": group.0,
            "labels": req.labels,
            "work_folder": "_work",
        });
        let jit = match self.jit_once(&path, &body, installation).await {
            Ok(j) => j,
            Err(Failure { error, earlier_attempt_ambiguous: true })
                if error.code.as_deref() == Some("409") =>
            {
                tracing::warn!(runner = %req.name, "409 after an ambiguous attempt, replacing the orphaned runner");
                let q = query_escape(req.name.as_str());
                let existing = self
                    .list_runners_at(OP, &format!("{list_path}?name={q}&per_page=100"), installation)
                    .await?;
                for r in existing.into_iter().filter(|r| r.name == req.name.as_str()) {
                    let del = format!("{list_path}/{}", r.id);
                    self.send(Call {
                        op: OP,
                        method: Method::DELETE,
                        url: self.url(&del),
                        auth: Auth::Installation(installation),
                        body: None,
                    })
                    .await
                    .map_err(|f| f.error)?;
                }
                self.jit_once(&path, &body, installation).await.map_err(|f| f.error)?
            }
            Err(f) => return Err(f.error),
        };
        Ok(JitConfig {
            runner_id: RunnerId(jit.runner.id),
            runner_group_id: jit.runner.runner_group_id.map(RunnerGroupId).unwrap_or(group),
            encoded: Secret::new(jit.encoded_jit_config),
        })
    }

    /// `GET /orgs/{org}/actions/runners`, all pages (100 per page). Reconcile only.
    async fn list_runners(&self, org: &str) -> Result<Vec<RegisteredRunner>, PortError> {
        const OP: &str = "github:list-runners";
        check_segment(OP, "organisation", org)?;
        let installation = self.installation_for(OP, org, None).await?;
        let runners = self
            .list_runners_at(OP, &format!("/orgs/{org}/actions/runners?per_page=100"), installation)
            .await?;
        Ok(runners.into_iter().map(to_registered).collect())
    }

    /// `DELETE /orgs/{org}/actions/runners/{id}`. A runner that is gone already comes back as
    /// a permanent error with code `404`; one still running a job as `422`.
    async fn delete_runner(&self, org: &str, id: RunnerId) -> Result<(), PortError> {
        const OP: &str = "github:delete-runner";
        check_segment(OP, "organisation", org)?;
        let installation = self.installation_for(OP, org, None).await?;
        self.send(Call {
            op: OP,
            method: Method::DELETE,
            url: self.url(&format!("/orgs/{org}/actions/runners/{id}")),
            auth: Auth::Installation(installation),
            body: None,
        })
        .await
        .map_err(|f| f.error)?;
        Ok(())
    }

    /// `GET /repos/{owner}/{repo}/actions/jobs/{job_id}`.
    async fn get_job(&self, repo: &RepoFullName, job: JobId) -> Result<JobInfo, PortError> {
        const OP: &str = "github:get-job";
        let (owner, name) = split_repo(OP, repo)?;
        check_segment(OP, "owner", owner)?;
        check_segment(OP, "repository", name)?;
        let installation = self.installation_for(OP, owner, Some(name)).await?;
        let (j, _): (JobBody, _) = self
            .get_json(
                OP,
                &format!("/repos/{owner}/{name}/actions/jobs/{job}"),
                Auth::Installation(installation),
            )
            .await?;
        Ok(JobInfo {
            id: JobId(j.id),
            status: j.status,
            conclusion: j.conclusion,
            runner_name: j.runner_name.map(RunnerName),
            run_attempt: j.run_attempt.unwrap_or(1),
        })
    }

    /// `POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun`.
    async fn rerun_job(&self, repo: &RepoFullName, job: JobId) -> Result<(), PortError> {
        const OP: &str = "github:rerun-job";
        let (owner, name) = split_repo(OP, repo)?;
        check_segment(OP, "owner", owner)?;
        check_segment(OP, "repository", name)?;
        let installation = self.installation_for(OP, owner, Some(name)).await?;
        self.send(Call {
            op: OP,
            method: Method::POST,
            url: self.url(&format!("/repos/{owner}/{name}/actions/jobs/{job}/rerun")),
            auth: Auth::Installation(installation),
            body: None,
        })
        .await
        .map_err(|f| f.error)?;
        Ok(())
    }

    fn rate_limit_remaining(&self) -> Option<u64> {
        match self.rate_remaining.load(Ordering::Relaxed) {
            NO_VALUE => None,
            v => Some(v),
        }
    }
}
