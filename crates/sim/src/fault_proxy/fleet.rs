//! Partial CreateFleet results. moto fills every instant fleet from its first override and never
//! reports per-override `Errors`; real EC2 skips capacity pools it cannot serve, fills from the
//! others, and lists each skipped pool in `errorSet`. The proxy reproduces that by dropping the
//! overrides a fault names before moto sees the request, then adding one `errorSet` item per
//! dropped override to moto's answer.

use super::form;
use super::protocol::xml_escape;
use std::collections::BTreeMap;

/// What a fault matches, resolved against one request.
#[derive(Debug, Clone)]
pub struct OverrideFault {
    pub instance_types: Option<Vec<String>>,
    pub subnets: Option<Vec<String>>,
    /// `spot` or `on-demand`; `None` for both.
    pub market: Option<String>,
    pub code: String,
    pub message: Option<String>,
}

impl OverrideFault {
    fn matches(&self, market: &str, ov: &Override) -> bool {
        self.market.as_deref().is_none_or(|m| m == market)
            && self
                .instance_types
                .as_ref()
                .is_none_or(|ts| ov.get("InstanceType").is_some_and(|t| ts.iter().any(|x| x == t)))
            && self
                .subnets
                .as_ref()
                .is_none_or(|ss| ov.get("SubnetId").is_some_and(|s| ss.iter().any(|x| x == s)))
    }
}

/// One override's fields, keyed by the part after `Overrides.N.` (`InstanceType`, `SubnetId`,
/// `Placement.GroupName`, …).
#[derive(Debug, Clone, Default)]
struct Override(Vec<(String, String)>);

impl Override {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Default)]
struct TemplateConfig {
    /// `LaunchTemplateSpecification.*` and anything else that is not an override.
    rest: Vec<(String, String)>,
    overrides: BTreeMap<u32, Override>,
}

/// The result of applying faults to one CreateFleet request.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The form to forward; `None` when every override failed and moto must not be asked.
    pub forward: Option<Vec<(String, String)>>,
    /// `<item>…</item>` elements for `errorSet`.
    pub error_items: Vec<String>,
    /// Which of the faults (by index in the slice given) failed at least one override.
    pub applied: Vec<usize>,
}

const LTC: &str = "LaunchTemplateConfigs.";

/// Applies `faults` to a CreateFleet form. Returns `None` when nothing matched (forward the
/// request untouched).
pub fn rewrite(params: &[(String, String)], faults: &[OverrideFault]) -> Option<Rewrite> {
    let market = form::get(params, "TargetCapacitySpecification.DefaultTargetCapacityType")
        .unwrap_or("on-demand")
        .to_owned();
    let mut configs: BTreeMap<u32, TemplateConfig> = BTreeMap::new();
    let mut others = Vec::new();
    for (k, v) in params {
        let Some(rest) = k.strip_prefix(LTC) else {
            others.push((k.clone(), v.clone()));
            continue;
        };
        let Some((idx, field)) = rest.split_once('.').and_then(|(i, f)| Some((i.parse::<u32>().ok()?, f)))
        else {
            others.push((k.clone(), v.clone()));
            continue;
        };
        let cfg = configs.entry(idx).or_default();
        match field
            .strip_prefix("Overrides.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(j, f)| Some((j.parse::<u32>().ok()?, f)))
        {
            Some((j, f)) => cfg.overrides.entry(j).or_default().0.push((f.to_owned(), v.clone())),
            None => cfg.rest.push((field.to_owned(), v.clone())),
        }
    }

    let mut error_items = Vec::new();
    let mut applied = vec![false; faults.len()];
    let mut kept_configs: Vec<TemplateConfig> = Vec::new();
    let mut dropped_any = false;
    for cfg in configs.into_values() {
        let mut kept = Vec::new();
        for ov in cfg.overrides.values() {
            match faults.iter().position(|f| f.matches(&market, ov)) {
                Some(i) => {
                    applied[i] = true;
                    dropped_any = true;
                    error_items.push(error_item(&cfg.rest, ov, &market, &faults[i]));
                }
                None => kept.push(ov.clone()),
            }
        }
        let had_overrides = !cfg.overrides.is_empty();
        if had_overrides && kept.is_empty() {
            continue;
        }
        kept_configs.push(TemplateConfig {
            rest: cfg.rest,
            overrides: kept.into_iter().enumerate().map(|(j, o)| (j as u32 + 1, o)).collect(),
        });
    }
    if !dropped_any {
        return None;
    }
    let forward = if kept_configs.is_empty() {
        None
    } else {
        let mut out = others;
        for (i, cfg) in kept_configs.iter().enumerate() {
            let i = i + 1;
            for (f, v) in &cfg.rest {
                out.push((format!("{LTC}{i}.{f}"), v.clone()));
            }
            for (j, ov) in &cfg.overrides {
                for (f, v) in &ov.0 {
                    out.push((format!("{LTC}{i}.Overrides.{j}.{f}"), v.clone()));
                }
            }
        }
        Some(out)
    };
    Some(Rewrite {
        forward,
        error_items,
        applied: applied.iter().enumerate().filter(|(_, a)| **a).map(|(i, _)| i).collect(),
    })
}

/// `LaunchTemplateId` → `launchTemplateId`: response members are the request's in lower camel.
fn lower_camel(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

fn error_item(spec_rest: &[(String, String)], ov: &Override, market: &str, fault: &OverrideFault) -> String {
    let mut spec = String::new();
    for (k, v) in spec_rest {
        if let Some(f) = k.strip_prefix("LaunchTemplateSpecification.") {
            if matches!(f, "LaunchTemplateId" | "LaunchTemplateName" | "Version") {
                spec.push_str(&format!("<{0}>{1}</{0}>", lower_camel(f), xml_escape(v)));
            }
        }
    }
    let mut overrides = String::new();
    for (k, v) in &ov.0 {
        // Only the flat members; nested ones (placement, requirements) are not needed to tell
        // which pool failed.
        if matches!(
            k.as_str(),
            "InstanceType"
                | "SubnetId"
                | "AvailabilityZone"
                | "AvailabilityZoneId"
                | "MaxPrice"
                | "WeightedCapacity"
                | "Priority"
                | "ImageId"
        ) {
            overrides.push_str(&format!("<{0}>{1}</{0}>", lower_camel(k), xml_escape(v)));
        }
    }
    let message = fault.message.clone().unwrap_or_else(|| match fault.code.as_str() {
        "InsufficientInstanceCapacity" => format!(
            "We currently do not have sufficient {} capacity in the Availability Zone you requested. Our system will be working on provisioning additional capacity.",
            ov.get("InstanceType").unwrap_or("instance")
        ),
        code => super::protocol::default_message(code),
    });
    format!(
        "<item><launchTemplateAndOverrides><launchTemplateSpecification>{spec}</launchTemplateSpecification><overrides>{overrides}</overrides></launchTemplateAndOverrides><lifecycle>{}</lifecycle><errorCode>{}</errorCode><errorMessage>{}</errorMessage></item>",
        xml_escape(market),
        xml_escape(&fault.code),
        xml_escape(&message)
    )
}

/// Adds `items` to the `errorSet` of a CreateFleetResponse body.
pub fn merge_errors(body: &str, items: &[String]) -> String {
    if items.is_empty() {
        return body.to_owned();
    }
    let joined = items.concat();
    if let Some(pos) = body.find("<errorSet>") {
        let at = pos + "<errorSet>".len();
        return format!("{}{joined}{}", &body[..at], &body[at..]);
    }
    if body.contains("<errorSet/>") {
        return body.replacen("<errorSet/>", &format!("<errorSet>{joined}</errorSet>"), 1);
    }
    match body.rfind("</CreateFleetResponse>") {
        Some(pos) => format!("{}<errorSet>{joined}</errorSet>{}", &body[..pos], &body[pos..]),
        None => body.to_owned(),
    }
}

/// The answer EC2 gives when no override could be served: a fleet id, errors, no instances.
pub fn all_failed_response(items: &[String]) -> String {
    let id = uuid::Uuid::new_v4();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateFleetResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>{}</requestId><fleetId>fleet-{id}</fleetId><errorSet>{}</errorSet><fleetInstanceSet/></CreateFleetResponse>",
        uuid::Uuid::new_v4(),
        items.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(market: &str) -> Vec<(String, String)> {
        [
            ("Action", "CreateFleet"),
            ("LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateId", "lt-1"),
            ("LaunchTemplateConfigs.1.LaunchTemplateSpecification.Version", "$Default"),
            ("LaunchTemplateConfigs.1.Overrides.1.InstanceType", "m5.large"),
            ("LaunchTemplateConfigs.1.Overrides.1.SubnetId", "subnet-a"),
            ("LaunchTemplateConfigs.1.Overrides.2.InstanceType", "c5.large"),
            ("LaunchTemplateConfigs.1.Overrides.2.SubnetId", "subnet-a"),
            ("LaunchTemplateConfigs.1.Overrides.3.InstanceType", "m5.large"),
            ("LaunchTemplateConfigs.1.Overrides.3.SubnetId", "subnet-b"),
            ("TargetCapacitySpecification.DefaultTargetCapacityType", market),
            ("TargetCapacitySpecification.TotalTargetCapacity", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn ice(types: &[&str], market: Option<&str>) -> OverrideFault {
        OverrideFault {
            instance_types: Some(types.iter().map(|s| s.to_string()).collect()),
            subnets: None,
            market: market.map(str::to_owned),
            code: "InsufficientInstanceCapacity".into(),
            message: None,
        }
    }

    #[test]
    fn failing_type_is_dropped_and_the_rest_renumbered() {
        let r = rewrite(&req("spot"), &[ice(&["m5.large"], Some("spot"))]).unwrap();
        let fwd = r.forward.unwrap();
        assert_eq!(form::get(&fwd, "LaunchTemplateConfigs.1.Overrides.1.InstanceType"), Some("c5.large"));
        assert_eq!(form::get(&fwd, "LaunchTemplateConfigs.1.Overrides.2.InstanceType"), None);
        assert_eq!(
            form::get(&fwd, "LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateId"),
            Some("lt-1")
        );
        assert_eq!(form::get(&fwd, "TargetCapacitySpecification.TotalTargetCapacity"), Some("2"));
        assert_eq!(r.error_items.len(), 2);
        assert!(
            r.error_items[0].contains("<instanceType>m5.large</instanceType><subnetId>subnet-a</subnetId>")
        );
        assert!(r.error_items[1].contains("<subnetId>subnet-b</subnetId>"));
        assert!(r.error_items[0].contains("<lifecycle>spot</lifecycle>"));
        assert_eq!(r.applied, vec![0]);
    }

    #[test]
    fn market_filter_spares_on_demand_requests() {
        assert!(rewrite(&req("on-demand"), &[ice(&["m5.large"], Some("spot"))]).is_none());
    }

    #[test]
    fn everything_failing_forwards_nothing() {
        let all = OverrideFault { instance_types: None, ..ice(&[], Some("spot")) };
        let r = rewrite(&req("spot"), &[all]).unwrap();
        assert!(r.forward.is_none());
        assert_eq!(r.error_items.len(), 3);
        let body = all_failed_response(&r.error_items);
        assert!(body.contains("<errorSet><item>"));
    }

    #[test]
    fn errors_merge_into_moto_shaped_responses() {
        let moto = "<CreateFleetResponse xmlns=\"x\"><fleetId>f</fleetId><fleetInstanceSet></fleetInstanceSet></CreateFleetResponse>";
        let merged = merge_errors(moto, &["<item>e</item>".into()]);
        assert!(merged.ends_with("<errorSet><item>e</item></errorSet></CreateFleetResponse>"), "{merged}");
        let with_set = "<CreateFleetResponse><errorSet/></CreateFleetResponse>";
        assert_eq!(
            merge_errors(with_set, &["<item/>".into()]),
            "<CreateFleetResponse><errorSet><item/></errorSet></CreateFleetResponse>"
        );
    }
}
