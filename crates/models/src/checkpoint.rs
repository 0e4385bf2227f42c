//! Checkpoint files: one `model.safetensors` or shards listed by
//! `model.safetensors.index.json`, memory-mapped, read one tensor at a time so host memory
//! never holds the whole model. Every header is validated when opened (a truncated or
//! corrupt file fails here, naming the file), and every tensor read names its file.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use peregrine_core::{DType, Error, HostTensor, Result};
use safetensors::SafeTensors;

/// Where one tensor lives and what it holds.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub file: usize,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// The open safetensors files of one model.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    tensors: BTreeMap<String, TensorInfo>,
}

impl Checkpoint {
    /// Open the safetensors files of the model in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let files = checkpoint_files(dir)?;
        let mut ckpt = Checkpoint { dir: dir.to_path_buf(), files: Vec::new(), tensors: BTreeMap::new() };
        for path in files {
            ckpt.add_file(path)?;
        }
        Ok(ckpt)
    }

    fn add_file(&mut self, path: PathBuf) -> Result<()> {
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the file is opened read-only; we never write through the map, and a
        // checkpoint being modified while loaded is outside what we support.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| Error::file(&path, format!("not a valid safetensors file ({e}); is it truncated or corrupt?")))?;
        let index = self.files.len();
        for (name, view) in st.tensors() {
            let dtype = convert_dtype(view.dtype()).ok_or_else(|| {
                Error::tensor(&path, &name, format!("unsupported dtype {:?}", view.dtype()))
            })?;
            if self.tensors.contains_key(&name) {
                return Err(Error::tensor(&path, &name, "appears in more than one shard"));
            }
            self.tensors.insert(name, TensorInfo { file: index, dtype, shape: view.shape().to_vec() });
        }
        self.files.push((path, mmap));
        Ok(())
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    /// Shape and dtype of `name`, if present.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The file holding `name` (for error messages).
    pub fn file_of(&self, name: &str) -> PathBuf {
        match self.tensors.get(name) {
            Some(info) => self.files[info.file].0.clone(),
            None => self.files.first().map(|f| f.0.clone()).unwrap_or_else(|| self.dir.clone()),
        }
    }

    /// Read tensor `name`, copying its bytes out of the map.
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::tensor(self.file_of(name), name, "missing from the checkpoint"))?;
        let (path, mmap) = &self.files[info.file];
        let st = SafeTensors::deserialize(mmap).map_err(|e| Error::file(path, e.to_string()))?;
        let view = st.tensor(name).map_err(|e| Error::tensor(path, name, e.to_string()))?;
        Ok(HostTensor::new(info.shape.clone(), info.dtype, view.data().to_vec()))
    }

    /// Read `name` and check it has `shape`, naming expected and found shapes otherwise.
    pub fn read_shaped(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        self.check_shape(name, shape)?;
        let t = self.read(name)?;
        if !t.dtype.is_float() {
            return Err(Error::tensor(self.file_of(name), name, format!("expected a float tensor, found {}", t.dtype)));
        }
        Ok(t)
    }

    /// Fail unless `name` exists with `shape`.
    pub fn check_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        match self.tensors.get(name) {
            None => Err(Error::tensor(
                self.file_of(name),
                name,
                format!("missing from the checkpoint (expected shape {shape:?})"),
            )),
            Some(info) if info.shape != shape => Err(Error::tensor(
                self.file_of(name),
                name,
                format!("expected shape {shape:?}, found {:?}", info.shape),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Total bytes of tensor data on disk.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.values().map(|t| (t.shape.iter().product::<usize>() * t.dtype.size()) as u64).sum()
    }
}

/// The safetensors files of `dir`: the shards of the index, or `model.safetensors`.
fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "not a directory (expected a Falcon model directory or a hub id like tiiuae/falcon-7b)"));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        return shard_files(&index);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    if dir.join("pytorch_model.bin").exists() || dir.join("pytorch_model.bin.index.json").exists() {
        return Err(Error::file(
            dir,
            "holds a pytorch_model.bin checkpoint, which Peregrine does not read (pickle); convert it once with \
             transformers: `AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`",
        ));
    }
    Err(Error::file(dir, "no model.safetensors or model.safetensors.index.json"))
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::file(index, format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::config(index, "weight_map", "missing or not an object"))?;
    let mut names: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    names
        .into_iter()
        .map(|n| {
            let p = dir.join(n);
            if p.exists() {
                Ok(p)
            } else {
                Err(Error::file(&p, format!("shard listed in {} is missing", index.display())))
            }
        })
        .collect()
}

fn convert_dtype(d: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match d {
        S::F64 => DType::F64,
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::I64 => DType::I64,
        S::I32 => DType::I32,
        S::I8 => DType::I8,
        S::U8 => DType::U8,
        _ => return None,
    })
}

/// Write named tensors as one safetensors file (with optional string metadata).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let dtype = st_dtype(t.dtype);
            safetensors::tensor::TensorView::new(dtype, t.shape.clone(), &t.bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::tensor(path, name, e.to_string()))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, &metadata, path).map_err(|e| Error::file(path, e.to_string()))
}

fn st_dtype(d: DType) -> safetensors::Dtype {
    use safetensors::Dtype as S;
    match d {
        DType::F64 => S::F64,
        DType::F32 => S::F32,
        DType::F16 => S::F16,
        DType::BF16 => S::BF16,
        DType::I64 => S::I64,
        DType::I32 => S::I32,
        DType::I8 => S::I8,
        DType::U8 => S::U8,
    }
}
