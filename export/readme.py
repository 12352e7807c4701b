"""The README.md written into every bundle: what is inside, and how an app loads it.

The Kotlin and Swift snippets use each runtime's public API as documented by its project; they
are written for app developers and are not compiled or run by calora (no Android/iOS toolchain
here). What calora does run is each artifact in its own runtime on Linux: see `manifest.json`.
"""

from __future__ import annotations

def adapter_dtype_line(manifest: dict) -> str:
    """One sentence on how the adapter files (swappable) or task programs (shared) store the task's tensors."""
    dtype = manifest.get("adapter_dtype", "float32")
    if manifest["mode"] == "shared":
        how = ("the trained float32 values" if dtype == "float32" else "int8 codes with one scale per rank component, "
               "run as XNNPACK int8 linears with dynamic int8 activations, like the backbone's")
        return f"\n\nEach task program holds its adapter as {how}; nothing to convert in the app."
    if manifest["mode"] != "swappable":
        return ""
    how = {"onnx": "the backbone's adapter inputs have that dtype and it widens them to float32 itself",
           "executorch": "widen them to float32 once when loading a task; `forward` takes float32",
           "coreml": "each task function stores its adapter matrices so and widens them at load"}
    if dtype == "int8":
        how["executorch"] = ("the LoRA and recovery matrices are int8 codes, each with a float32 `<name>.scale` "
                             "tensor in the same file, one scale per rank component, shaped to broadcast ([rank, 1] "
                             "for lora_A / recovery.down, [1, rank] for lora_B / recovery.up): when loading a task, "
                             "pass codes times scale for those and the float16 head widened; `forward` takes "
                             "float32")
        how["coreml"] = ("each task function stores its LoRA and recovery matrices as int8 with one scale per "
                         "rank component (constexpr_blockwise_shift_scale) and its head float16, widened at model "
                         "load")
        how["onnx"] = ("the LoRA and recovery matrices as int8 codes with a float32 `<name>.scale` tensor each, the "
                       "head float16; the backbone takes them as they are and dequantizes them itself")
    return (f"\n\nAdapter tensors are stored as {dtype}: {how.get(manifest['target'], 'see manifest.json')}. "
            "The arithmetic is float32 either way.")


_SNIPPETS = {
    ("executorch", "baked"): ("""```kotlin
// build.gradle: implementation("org.pytorch:executorch-android:<version>")
val module = Module.load("$bundle/executorch/<task>.pte")
val ids = Tensor.fromBlob(inputIds /* LongArray(1 * MAX_LEN) */, longArrayOf(1, MAX_LEN))
val mask = Tensor.fromBlob(attentionMask, longArrayOf(1, MAX_LEN))
val logits = module.forward(EValue.from(ids), EValue.from(mask))[0].toTensor().dataAsFloatArray
// switch task: Module.load(...) the other task's .pte
```""", """```swift
// Swift Package: executorch (ExecuTorch, backend_xnnpack)
let module = Module(filePath: bundle + "/executorch/<task>.pte")
try module.load("forward")
let out = try module.forward([Tensor<Int64>(inputIds, shape: [1, maxLen]),
                              Tensor<Int64>(attentionMask, shape: [1, maxLen])])
// switch task: load the other task's .pte
```"""),
    ("executorch", "swappable"): ("""```kotlin
val backbone = Module.load("$bundle/executorch/backbone.pte")   // load once
// adapter tensors of the active task, in manifest order (executorch/adapters/<task>.*); the file stores
// manifest.adapter_dtype (float16): widen to FloatArray once here (android.util.Half.toFloat), not per call;
// (int8): codes times the file's '<name>.scale' (scale[r]: row r of lora_A/recovery.down, column r of lora_B/up)
val adapter: List<EValue> = loadAdapter("$bundle/executorch/adapters/<task>")
val logits = backbone.forward(EValue.from(ids), EValue.from(mask), *adapter.toTypedArray())
// switch task: pass another task's adapter tensors; the backbone stays loaded
```""", """```swift
let backbone = Module(filePath: bundle + "/executorch/backbone.pte")
try backbone.load("forward")
let adapter = try loadAdapter(bundle + "/executorch/adapters/<task>")  // [Tensor<Float>] in manifest order, built
                                                                       // once: Float16 widened, int8 times its scale
let out = try backbone.forward([ids, mask] + adapter)
```"""),
    ("executorch", "shared"): ("""```kotlin
// executorch-android's Module.load takes no data file (its LlmModule does, for generation): load the
// task's program from your JNI code with ExecuTorch's C++ Module, which does:
//   executorch::extension::Module module(bundle + "/executorch/<task>.pte",
//                                        bundle + "/executorch/backbone.ptd");   // program, data file
//   auto logits = module.forward({ids, mask});       // TensorPtrs [1, MAX_LEN] int64
// switch task: a new Module on the other task's .pte, same backbone.ptd
// (or ship the swappable bundle, whose backbone.pte Module.load opens directly)
```""", """```swift
// Swift Package: executorch (ExecuTorch, backend_xnnpack, kernels_quantized)
let module = Module(filePath: bundle + "/executorch/<task>.pte",
                    dataFilePaths: [bundle + "/executorch/backbone.ptd"])   // the shared backbone weights
try module.load("forward")
let out = try module.forward([Tensor<Int64>(inputIds, shape: [1, maxLen]),
                              Tensor<Int64>(attentionMask, shape: [1, maxLen])])
// switch task: a new Module on the other task's .pte, same backbone.ptd
```"""),
    ("onnx", "baked"): ("""```kotlin
// build.gradle: implementation("com.microsoft.onnxruntime:onnxruntime-android:<version>")
val env = OrtEnvironment.getEnvironment()
val session = env.createSession("$bundle/onnx/<task>.ort", OrtSession.SessionOptions())
val ids = OnnxTensor.createTensor(env, LongBuffer.wrap(inputIds), longArrayOf(1, seqLen))
val mask = OnnxTensor.createTensor(env, LongBuffer.wrap(attentionMask), longArrayOf(1, seqLen))
val logits = session.run(mapOf("input_ids" to ids, "attention_mask" to mask))[0].value as Array<FloatArray>
// switch task: create a session on the other task's .ort
```""", """```swift
// CocoaPods: onnxruntime-mobile-objc (or onnxruntime-objc)
let env = try ORTEnv(loggingLevel: .warning)
let session = try ORTSession(env: env, modelPath: bundle + "/onnx/<task>.ort", sessionOptions: nil)
let ids = try ORTValue(tensorData: NSMutableData(data: idsData), elementType: .int64, shape: [1, seqLen as NSNumber])
let mask = try ORTValue(tensorData: NSMutableData(data: maskData), elementType: .int64, shape: [1, seqLen as NSNumber])
let out = try session.run(withInputs: ["input_ids": ids, "attention_mask": mask], outputNames: ["logits"], runOptions: nil)
```"""),
    ("onnx", "swappable"): ("""```kotlin
val session = env.createSession("$bundle/onnx/backbone.ort", OrtSession.SessionOptions())  // load once
val adapter = OrtLoraAdapter.create("$bundle/onnx/adapters/<task>.onnx_adapter")        // memory-mapped
val options = OrtSession.RunOptions().apply { addActiveLoraAdapter(adapter) }
val logits = session.run(mapOf("input_ids" to ids, "attention_mask" to mask), options)
// switch task: RunOptions with another task's OrtLoraAdapter; no session reload
```""", """```swift
// The Objective-C/Swift wrapper has no LoRA-adapter call that calora knows of (ORT 1.32); use the
// C API from a bridging header: OrtApi.CreateLoraAdapter(path, nil, &adapter) and
// OrtApi.RunOptionsAddActiveLoraAdapter(runOptions, adapter), then OrtApi.Run with those options.
```"""),
    ("coreml", "baked"): ("""Core ML runs on Apple platforms only: on Android ship the ExecuTorch or ONNX bundle.""", """```swift
let url = try MLModel.compileModel(at: bundleURL.appendingPathComponent("coreml/<task>.mlpackage"))
let model = try MLModel(contentsOf: url)
let ids = try MLMultiArray(shape: [1, maxLen as NSNumber], dataType: .int32)   // fill with token ids
let mask = try MLMultiArray(shape: [1, maxLen as NSNumber], dataType: .int32)
let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: ["input_ids": ids, "attention_mask": mask]))
let logits = out.featureValue(for: "logits")!.multiArrayValue!
```"""),
    ("coreml", "swappable"): ("""Core ML runs on Apple platforms only: on Android ship the ExecuTorch or ONNX bundle.""", """```swift
let url = try MLModel.compileModel(at: bundleURL.appendingPathComponent("coreml/tasks.mlpackage"))
let config = MLModelConfiguration()
config.functionName = "<task>"                      // one function per task, backbone weights shared
let model = try MLModel(contentsOf: url, configuration: config)
// switch task: a new MLModel with another functionName (same compiled package)
```"""),
}


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def bundle_readme(manifest: dict) -> str:
    target, mode = manifest["target"], manifest["mode"]
    none = f"(calora has no {target} snippet for this platform yet)"
    kotlin, swift = _SNIPPETS.get((target, mode), (none, none))
    rows = []
    for f in manifest["backbone"]["files"]:
        rows.append(f"| `{f['path']}` | {f['role']} | all | {_size(f['bytes'])} |")
    for t in manifest["tasks"]:
        for f in t["files"]:
            rows.append(f"| `{f['path']}` | {f['role']} | {t['name']} | {_size(f['bytes'])} |")
    if manifest.get("kind") == "generate":
        from .readme_gen import generative_readme

        header = (f"# calora bundle: {target}, {mode}, text generation\n\nMade by `{manifest['command']}`. Backbone "
                  f"`{manifest['backbone']['source']}` compressed with `{manifest['backbone']['compression']['text']}` "
                  f"(fingerprint `{manifest['backbone']['fingerprint'][:23]}…`). Everything an app needs is in this "
                  "folder; `manifest.json` has the details.")
        table = "| file | role | task | size |\n|---|---|---|---|\n" + "\n".join(rows)
        return generative_readme(manifest, header, table)
    tasks = "\n".join(f"- `{t['name']}`: labels {t['label_names']} (index = class id); adapter "
                      f"{t['adapter_fingerprint'][:19]}…, backbone {t['backbone_fingerprint'][:19]}…"
                      for t in manifest["tasks"])
    main_inputs = [i for i in manifest["inputs"] if i["name"] in ("input_ids", "attention_mask")]
    inputs = ", ".join(f"`{i['name']}` {i['dtype']} {i['shape']}" for i in main_inputs)
    extra = len(manifest["inputs"]) - len(main_inputs)
    if extra:
        inputs += (f", then the active task's {extra} adapter tensors (LoRA, recovery, head; names, shapes and "
                   "order under `inputs` in manifest.json)")
    outputs = ", ".join(f"`{o['name']}` {o['dtype']} {o['shape']}" for o in manifest["outputs"])
    return f"""# calora bundle: {target}, {mode}

Made by `{manifest['command']}`. Backbone `{manifest['backbone']['source']}` compressed with
`{manifest['backbone']['compression']['text']}` (fingerprint `{manifest['backbone']['fingerprint'][:23]}…`).
Everything an app needs is in this folder; `manifest.json` has the details (versions, shapes,
file hashes, the smoke comparison against PyTorch, re-quantization error).

## Files

| file | role | task | size |
|---|---|---|---|
{chr(10).join(rows)}

## Tasks

{tasks}

## Running a text

1. Tokenize with `tokenizer/` (a Hugging Face `tokenizer.json`; on device: the C++ HF tokenizer
   of `pytorch_tokenizers` for ExecuTorch apps, swift-transformers `Tokenizers` on iOS, or any
   WordPiece/BPE implementation fed the same files), truncating/padding to
   {manifest['max_sequence_length']} tokens.
2. Inputs: {inputs}. Output: {outputs}; the predicted label is `argmax(logits)`.

## Switching tasks

{manifest['task_switch']}{adapter_dtype_line(manifest)}

### Android (Kotlin)

{kotlin}

### iOS (Swift)

{swift}

The snippets follow each runtime's public API; calora does not compile them (no mobile toolchain
in its CI). What calora ran is listed under `validation` in `manifest.json`.

## Checking this bundle

    calora-validate <this folder> --report parity/

runs these artifacts in their runtimes on each task's evaluation data against the PyTorch models
and exits non-zero on a parity failure (`--record` writes the outcome into `manifest.json`).
"""
