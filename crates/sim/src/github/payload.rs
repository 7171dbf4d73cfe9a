//! JSON bodies in the shapes GitHub sends: REST responses (as described by `@octokit/openapi`)
//! and `workflow_job` webhook payloads (as in `@octokit/webhooks-examples`). The conformance
//! tests validate both against the published schemas.

use super::model::{Job, JobStatus, Org, Runner};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

const WEB: &str = "https://github.com";

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A stable number derived from a name, so the same repository keeps the same id across calls.
pub fn stable_id(s: &str) -> u64 {
    // FNV-1a: tiny, deterministic, and good enough to spread ids.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.to_ascii_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h % 1_000_000_000 + 1_000
}

fn node_id(prefix: &str, id: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{id}"))
}

pub fn error(message: &str) -> Value {
    json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest",
    })
}

/// GitHub's `validation-error-simple` shape (422 on the runner endpoints).
pub fn validation_error(message: &str, errors: &[String]) -> Value {
    json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest/actions/self-hosted-runners",
        "errors": errors,
        "status": "422",
    })
}

pub fn user(api: &str, login: &str, id: u64, kind: &str) -> Value {
    let users = format!("{api}/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": node_id("04:User", id),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": users,
        "html_url": format!("{WEB}/{login}"),
        "followers_url": format!("{users}/followers"),
        "following_url": format!("{users}/following{{/other_user}}"),
        "gists_url": format!("{users}/gists{{/gist_id}}"),
        "starred_url": format!("{users}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{users}/subscriptions"),
        "organizations_url": format!("{users}/orgs"),
        "repos_url": format!("{users}/repos"),
        "events_url": format!("{users}/events{{/privacy}}"),
        "received_events_url": format!("{users}/received_events"),
        "type": kind,
        "site_admin": false,
    })
}

pub fn organization(api: &str, org: &Org) -> Value {
    let base = format!("{api}/orgs/{}", org.login);
    json!({
        "login": org.login,
        "id": org.id,
        "node_id": node_id("012:Organization", org.id),
        "url": base,
        "repos_url": format!("{base}/repos"),
        "events_url": format!("{base}/events"),
        "hooks_url": format!("{base}/hooks"),
        "issues_url": format!("{base}/issues"),
        "members_url": format!("{base}/members{{/member}}"),
        "public_members_url": format!("{base}/public_members{{/member}}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", org.id),
        "description": org.login,
    })
}

pub fn repository(api: &str, org: &Org, name: &str) -> Value {
    let full = format!("{}/{name}", org.login);
    let id = stable_id(&full);
    let r = format!("{api}/repos/{full}");
    let html = format!("{WEB}/{full}");
    let mut urls = json!({
        "id": id,
        "node_id": node_id("010:Repository", id),
        "name": name,
        "full_name": full,
        "private": true,
        "owner": user(api, &org.login, org.id, "Organization"),
        "html_url": html,
        "description": null,
        "fork": false,
        "url": r,
        "forks_url": format!("{r}/forks"),
        "keys_url": format!("{r}/keys{{/key_id}}"),
        "collaborators_url": format!("{r}/collaborators{{/collaborator}}"),
        "teams_url": format!("{r}/teams"),
        "hooks_url": format!("{r}/hooks"),
        "issue_events_url": format!("{r}/issues/events{{/number}}"),
        "events_url": format!("{r}/events"),
        "assignees_url": format!("{r}/assignees{{/user}}"),
        "branches_url": format!("{r}/branches{{/branch}}"),
        "tags_url": format!("{r}/tags"),
        "blobs_url": format!("{r}/git/blobs{{/sha}}"),
        "git_tags_url": format!("{r}/git/tags{{/sha}}"),
        "git_refs_url": format!("{r}/git/refs{{/sha}}"),
        "trees_url": format!("{r}/git/trees{{/sha}}"),
        "statuses_url": format!("{r}/statuses/{{sha}}"),
        "languages_url": format!("{r}/languages"),
        "stargazers_url": format!("{r}/stargazers"),
        "contributors_url": format!("{r}/contributors"),
        "subscribers_url": format!("{r}/subscribers"),
        "subscription_url": format!("{r}/subscription"),
        "commits_url": format!("{r}/commits{{/sha}}"),
        "git_commits_url": format!("{r}/git/commits{{/sha}}"),
    });
    let more = json!({
        "comments_url": format!("{r}/comments{{/number}}"),
        "issue_comment_url": format!("{r}/issues/comments{{/number}}"),
        "contents_url": format!("{r}/contents/{{+path}}"),
        "compare_url": format!("{r}/compare/{{base}}...{{head}}"),
        "merges_url": format!("{r}/merges"),
        "archive_url": format!("{r}/{{archive_format}}{{/ref}}"),
        "downloads_url": format!("{r}/downloads"),
        "issues_url": format!("{r}/issues{{/number}}"),
        "pulls_url": format!("{r}/pulls{{/number}}"),
        "milestones_url": format!("{r}/milestones{{/number}}"),
        "notifications_url": format!("{r}/notifications{{?since,all,participating}}"),
        "labels_url": format!("{r}/labels{{/name}}"),
        "releases_url": format!("{r}/releases{{/id}}"),
        "deployments_url": format!("{r}/deployments"),
    });
    // Split in three: one `json!` this size exceeds the macro recursion limit.
    let rest = json!({
        "created_at": "2024-01-02T03:04:05Z",
        "updated_at": "2024-01-02T03:04:05Z",
        "pushed_at": "2024-01-02T03:04:05Z",
        "git_url": format!("git://github.com/{full}.git"),
        "ssh_url": format!("git@github.com:{full}.git"),
        "clone_url": format!("{html}.git"),
        "svn_url": html,
        "homepage": null,
        "size": 1,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": null,
        "has_issues": true,
        "has_projects": true,
        "has_downloads": true,
        "has_wiki": true,
        "has_pages": false,
        "has_discussions": false,
        "forks_count": 0,
        "mirror_url": null,
        "archived": false,
        "disabled": false,
        "open_issues_count": 0,
        "license": null,
        "allow_forking": true,
        "is_template": false,
        "web_commit_signoff_required": false,
        "topics": [],
        "visibility": "private",
        "forks": 0,
        "open_issues": 0,
        "watchers": 0,
        "default_branch": "main",
        "custom_properties": {},
    });
    if let (Value::Object(a), Value::Object(b), Value::Object(c)) = (&mut urls, more, rest) {
        a.extend(b);
        a.extend(c);
    }
    urls
}

pub fn installation(api: &str, org: &Org, app_id: u64) -> Value {
    let id = org.installation_id;
    json!({
        "id": id,
        "account": user(api, &org.login, org.id, "Organization"),
        "repository_selection": "all",
        "access_tokens_url": format!("{api}/app/installations/{id}/access_tokens"),
        "repositories_url": format!("{api}/installation/repositories"),
        "html_url": format!("{WEB}/organizations/{}/settings/installations/{id}", org.login),
        "app_id": app_id,
        "client_id": format!("Iv1.sim{app_id}"),
        "target_id": org.id,
        "target_type": "Organization",
        "permissions": {
            "organization_self_hosted_runners": "write",
            "administration": "write",
            "actions": "write",
            "metadata": "read",
        },
        "events": ["workflow_job"],
        "created_at": "2024-01-02T03:04:05Z",
        "updated_at": "2024-01-02T03:04:05Z",
        "single_file_name": null,
        "app_slug": "hangar-sim",
        "suspended_by": null,
        "suspended_at": null,
    })
}

pub fn installation_token(token: &str, expires_at: DateTime<Utc>) -> Value {
    json!({
        "token": token,
        "expires_at": ts(expires_at),
        "permissions": {
            "organization_self_hosted_runners": "write",
            "administration": "write",
            "actions": "write",
            "metadata": "read",
        },
        "repository_selection": "all",
    })
}

pub fn runner_groups(api: &str, org: &Org, groups: &[(u64, String)], total: usize) -> Value {
    let items: Vec<Value> = groups
        .iter()
        .map(|(id, name)| {
            json!({
                "id": id,
                "name": name,
                "visibility": "all",
                "default": *id == 1,
                "runners_url": format!("{api}/orgs/{}/actions/runner-groups/{id}/runners", org.login),
                "inherited": false,
                "allows_public_repositories": false,
                "restricted_to_workflows": false,
                "selected_workflows": [],
                "workflow_restrictions_read_only": false,
            })
        })
        .collect();
    json!({ "total_count": total, "runner_groups": items })
}

pub fn runner(r: &Runner) -> Value {
    json!({
        "id": r.id,
        "runner_group_id": r.group_id,
        "name": r.name,
        "os": if r.online() { "Linux" } else { "unknown" },
        "status": if r.online() { "online" } else { "offline" },
        "busy": r.job.is_some(),
        "labels": r.labels,
        "ephemeral": true,
    })
}

pub fn job(api: &str, j: &Job) -> Value {
    let full = j.full_name();
    let r = format!("{api}/repos/{full}");
    // GitHub sets `started_at` when the job is created and moves it when a runner picks it up.
    let started = j.started_at.unwrap_or(j.created_at);
    let steps = match j.status {
        JobStatus::Queued => json!([]),
        JobStatus::InProgress => json!([{
            "name": "Set up job",
            "status": "in_progress",
            "conclusion": null,
            "number": 1,
            "started_at": ts(started),
            "completed_at": null,
        }]),
        JobStatus::Completed => json!([{
            "name": "Set up job",
            "status": "completed",
            "conclusion": j.conclusion,
            "number": 1,
            "started_at": ts(started),
            "completed_at": j.completed_at.map(ts),
        }]),
    };
    json!({
        "id": j.id,
        "run_id": j.run_id,
        "run_url": format!("{r}/actions/runs/{}", j.run_id),
        "run_attempt": j.run_attempt,
        "node_id": node_id("08:CheckRun", j.id),
        "head_sha": j.head_sha,
        "url": format!("{r}/actions/jobs/{}", j.id),
        "html_url": format!("{WEB}/{full}/actions/runs/{}/job/{}", j.run_id, j.id),
        "status": j.status.as_str(),
        "conclusion": j.conclusion,
        "created_at": ts(j.created_at),
        "started_at": ts(started),
        "completed_at": j.completed_at.map(ts),
        "name": j.name,
        "steps": steps,
        "check_run_url": format!("{r}/check-runs/{}", j.id),
        "labels": j.labels,
        "runner_id": j.runner_id,
        "runner_name": j.runner_name,
        "runner_group_id": j.runner_group_id,
        "runner_group_name": j.runner_group_name,
        "workflow_name": j.workflow_name,
        "head_branch": j.head_branch,
    })
}

/// A `workflow_job` webhook payload for the job's current state.
pub fn workflow_job_event(api: &str, org: &Org, j: &Job, action: &str) -> Value {
    json!({
        "action": action,
        "workflow_job": job(api, j),
        "repository": repository(api, org, &j.repo),
        "organization": organization(api, org),
        "installation": { "id": org.installation_id, "node_id": node_id("023:Integration", org.installation_id) },
        "sender": user(api, "octocat", 583231, "User"),
    })
}
