//! `--model` resolution: a local directory is used as it is; anything shaped like a hub id
//! (`tiiuae/falcon-40b-instruct`, optionally `@revision`) is downloaded with `hf-hub` into
//! the standard Hugging Face cache (with progress bars), and its snapshot directory is used.

use std::path::{Path, PathBuf};

use peregrine_core::{Error, Result};

/// The local directory of model `spec`, downloading it from the hub when needed.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() {
        return match path.is_dir() {
            true => Ok(path.to_path_buf()),
            false => Err(Error::file(path, "is a file; --model takes a model directory or a hub id")),
        };
    }
    if !looks_like_hub_id(spec) {
        return Err(Error::file(path, "no such directory (and not a hub id like tiiuae/falcon-7b)"));
    }
    download(spec)
}

/// `org/name` or `org/name@revision`, with the characters the hub allows.
fn looks_like_hub_id(spec: &str) -> bool {
    let id = spec.split('@').next().unwrap_or("");
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

fn download(spec: &str) -> Result<PathBuf> {
    use hf_hub::{api::sync::ApiBuilder, Repo, RepoType};
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id, rev.to_string()),
        None => (spec, "main".to_string()),
    };
    let hub_err = |e: hf_hub::api::sync::ApiError| Error::msg(format!("downloading {spec} from the Hugging Face hub: {e}"));
    let api = ApiBuilder::from_env().with_progress(true).build().map_err(hub_err)?;
    let repo = api.repo(Repo::with_revision(id.to_string(), RepoType::Model, revision));
    let config = repo.get("config.json").map_err(hub_err)?;
    for optional in ["tokenizer.json", "generation_config.json"] {
        let _ = repo.get(optional);
    }
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            for shard in shard_names(&index)? {
                repo.get(&shard).map_err(hub_err)?;
            }
        }
        Err(_) => {
            repo.get("model.safetensors").map_err(hub_err)?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(index, e.to_string()))?;
    let mut names: Vec<String> = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::config(index, "weight_map", "missing"))?
        .values()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_from_paths() {
        assert!(looks_like_hub_id("tiiuae/falcon-40b-instruct"));
        assert!(looks_like_hub_id("tiiuae/falcon-7b@main"));
        assert!(!looks_like_hub_id("./models/tiny"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
    }

    #[test]
    fn a_missing_local_path_is_one_clear_error() {
        let e = resolve_model("/no/such/dir").unwrap_err().to_string();
        assert!(e.contains("no such directory"), "{e}");
    }
}
