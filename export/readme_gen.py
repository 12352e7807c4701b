"""The bundle README of a generative bundle: how an app generates text with it, per runtime.

As for classification, the Kotlin/Swift snippets follow each runtime's public LLM API as its
project documents it; calora does not compile them (no mobile toolchain here). What calora ran is
the artifact in the runtime's own LLM tooling on Linux (see `manifest.json` and calora-validate).
"""

from __future__ import annotations

#: onnxruntime-genai reads its thread count from genai_config.json; calora cannot know the phone's.
_OG_THREADS = """
4. Threads (onnxruntime-genai): set `model.decoder.session_options.intra_op_num_threads` in each
   `genai_config.json` to the device's performance-core count. Left unset, onnxruntime-genai 0.18
   ran one intra-op thread on a 2-core x86 machine, 1.5-1.6x slower per decoded token than with
   2 set (calora's docs/RESULTS.md, section 5); ExecuTorch and Core ML pick their threads
   themselves."""


def threads_step(manifest: dict) -> str:
    """The README's thread step for targets whose runtime needs one (onnxruntime-genai)."""
    return _OG_THREADS if manifest["target"] == "onnx" else ""


_GEN_SNIPPETS = {
    ("onnx", "baked"): ("""```kotlin
// build.gradle: implementation("com.microsoft.onnxruntime:onnxruntime-genai-android:<version>")
val model = Model("$bundle/onnx/<task>")            // the folder: genai_config.json names model.ort
val tokenizer = Tokenizer(model)
val stream = tokenizer.createStream()
val params = GeneratorParams(model).apply { setSearchOption("max_length", MAX_CONTEXT.toDouble()) }
val generator = Generator(model, params)
generator.appendTokenSequences(tokenizer.encode(promptWithChatTemplate))
while (!generator.isDone()) {
    generator.generateNextToken()
    onText(stream.decode(generator.getLastTokenInSequence(0)))   // stream to the UI
}
```""", """```swift
// onnxruntime-genai Objective-C API (OGA*), from Swift
let model = try OGAModel(path: bundle + "/onnx/<task>")
let tokenizer = try OGATokenizer(model: model)
let params = try OGAGeneratorParams(model: model)
try params.setSearchOption("max_length", doubleValue: Double(maxContext))
let generator = try OGAGenerator(model: model, params: params)
try generator.appendTokenSequences(try tokenizer.encode(promptWithChatTemplate))
while !generator.isDone() { try generator.generateNextToken() /* decode with a OGATokenizerStream */ }
```"""),
    ("onnx", "swappable"): ("""```kotlin
val model = Model("$bundle/onnx/genai")              // one backbone for every task
val adapters = Adapters(model)
adapters.loadAdapter("$bundle/onnx/adapters/<task>.onnx_adapter", "<task>")   // once per task
val generator = Generator(model, GeneratorParams(model))
generator.setActiveAdapter(adapters, "<task>")       // before appending the prompt
generator.appendTokenSequences(Tokenizer(model).encode(promptWithChatTemplate))
while (!generator.isDone()) { generator.generateNextToken() /* stream as in baked */ }
// switch task: a new Generator with setActiveAdapter(adapters, "<other task>"); the model stays loaded
```""", """```swift
let model = try OGAModel(path: bundle + "/onnx/genai")
let adapters = try OGAAdapters(model: model)
try adapters.loadAdapter(bundle + "/onnx/adapters/<task>.onnx_adapter", adapterName: "<task>")
let generator = try OGAGenerator(model: model, params: try OGAGeneratorParams(model: model))
try generator.setActiveAdapter(adapters, adapterName: "<task>")
```"""),
    ("executorch", "baked"): ("""```kotlin
// build.gradle: implementation("org.pytorch:executorch-android:<version>") (LlmModule)
val llm = LlmModule("$bundle/executorch/<task>.pte", "$bundle/tokenizer/tokenizer.json", 0.0f)
llm.load()
llm.generate(promptWithChatTemplate, MAX_CONTEXT, object : LlmCallback {
    override fun onResult(token: String) = onText(token)          // streamed pieces
    override fun onStats(stats: String) {}
})
```""", """```swift
// Swift Package: executorch (ExecuTorchLLM, backend_xnnpack, kernels_llm, kernels_quantized)
let runner = TextRunner(modelPath: bundle + "/executorch/<task>.pte",
                        tokenizerPath: bundle + "/tokenizer/tokenizer.json")
try runner.generate(promptWithChatTemplate, Config { $0.sequenceLength = maxContext }) { piece in onText(piece) }
```"""),
    ("executorch", "swappable"): ("""```kotlin
// The stock LlmModule calls forward(tokens, input_pos) only; the shared backbone also takes the
// active task's adapter tensors, so drive it with the Module API (the KV cache lives in the program):
val backbone = Module.load("$bundle/executorch/backbone.pte")
val adapter: List<EValue> = loadAdapter("$bundle/executorch/adapters/<task>.safetensors")  // metadata order,
                                                                    // float16 file widened to float32 once
var logits = backbone.forward(EValue.from(promptTokens /* [1, n] */), EValue.from(longArrayOf(0)), *adapter.toTypedArray())
var pos = n
while (pos < MAX_CONTEXT) {                           // greedy: argmax of the last row, then one token per call
    val next = argmaxLastRow(logits); if (next == EOS) break
    logits = backbone.forward(EValue.from(longArrayOf(next) /* [1, 1] */), EValue.from(longArrayOf(pos++)), *adapter.toTypedArray())
}
```""", """```swift
let backbone = Module(filePath: bundle + "/executorch/backbone.pte")
try backbone.load("forward")
let adapter = try loadAdapter(bundle + "/executorch/adapters/<task>.safetensors")  // [Tensor<Float>], metadata order
                                                                     // (float16 file widened once)
var out = try backbone.forward([promptTokens, Tensor<Int64>([0])] + adapter)       // prefill; then one token per call
```"""),
    ("executorch", "shared"): ("""```kotlin
// build.gradle: implementation("org.pytorch:executorch-android:<version>") (LlmModule)
// One backbone.ptd on the device; each task's .pte is its graph + adapter. Switch = a new LlmModule.
val llm = LlmModule("$bundle/executorch/<task>.pte", "$bundle/tokenizer/tokenizer.json", 0.0f,
                    "$bundle/executorch/backbone.ptd")          // dataPath: the shared backbone weights
llm.load()
llm.generate(promptWithChatTemplate, MAX_CONTEXT, object : LlmCallback {
    override fun onResult(token: String) = onText(token)
    override fun onStats(stats: String) {}
})
```""", """```swift
// ExecuTorch's C++ LLM runner takes the data file beside the program (create_text_llm_runner /
// TextLLMRunner(model, tokenizer, data_path), what calora-validate runs through its Python binding).
// Load "<task>.pte" with "backbone.ptd" as its data file, then generate as with a baked bundle.
```"""),
    ("coreml", "baked"): ("""Core ML runs on Apple platforms only: on Android ship the ExecuTorch or ONNX bundle.""", """```swift
// iOS 18 / macOS 15: a stateful model, the KV cache lives in an MLState
let model = try MLModel(contentsOf: try MLModel.compileModel(at: bundleURL.appendingPathComponent("coreml/<task>.mlpackage")))
let state = model.makeState()                               // a fresh cache per conversation
// prefill: input_ids [1, n] Int32 (the prompt), causal_mask [1, 1, n, n] Float32 (0 where key <= query, -1e9 above)
var out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: ["input_ids": ids, "causal_mask": mask]),
                               using: state)
// decode: input_ids [1, 1] (the new token), causal_mask [1, 1, 1, pos + 1] of zeros, same state; argmax of logits
```"""),
    ("coreml", "swappable"): ("""Core ML runs on Apple platforms only: on Android ship the ExecuTorch or ONNX bundle.""", """```swift
let config = MLModelConfiguration()
config.functionName = "<task>"                          // one stateful function per task, backbone shared
let model = try MLModel(contentsOf: compiledTasksURL, configuration: config)
let state = model.makeState()                           // prefill and decode as in the baked snippet
// switch task: a new MLModel with another functionName (same compiled package), and a new state
```"""),
}


def generative_readme(manifest: dict, header: str, files_table: str) -> str:
    from .readme import adapter_dtype_line

    target, mode = manifest["target"], manifest["mode"]
    none = f"(calora has no {target} snippet for generation yet)"
    kotlin, swift = _GEN_SNIPPETS.get((target, mode), (none, none))
    g = manifest["generation"]
    special = g["special_tokens"]
    fmt = g["prompt_format"]
    template = ("the chat template saved in `tokenizer/tokenizer_config.json` (one user turn plus the "
                "assistant generation prompt)" if fmt.get("kind") == "chat_template" else "the plain format: the "
                "prompt followed by a newline")
    tasks = "\n".join(f"- `{t['name']}`: adapter {t['adapter_fingerprint'][:19]}…, backbone "
                      f"{t['backbone_fingerprint'][:19]}…" for t in manifest["tasks"])
    return f"""{header}

## Files

{files_table}

## Tasks

{tasks}

## Generating text

1. Format the user's text with {template}, then tokenize with `tokenizer/` (a Hugging Face
   `tokenizer.json`; ExecuTorch's LLM runner and onnxruntime-genai read it directly). Special
   tokens: BOS {special.get('bos')}, EOS {special['eos']}, PAD {special.get('pad')}.
2. Prompt plus answer must fit in the maximum context of {g['max_context']} tokens (the KV cache
   size); the tasks were trained with prompts of up to {g['max_prompt_tokens']} tokens and answers
   of up to {g['max_new_tokens']} new tokens.
3. Decode greedily (the tasks were evaluated that way; sampling defaults in `manifest.json` under
   `generation.sampling`), stop at EOS.{threads_step(manifest)}

## Switching tasks

{manifest['task_switch']}{adapter_dtype_line(manifest)}

### Android (Kotlin)

{kotlin}

### iOS (Swift)

{swift}

The snippets follow each runtime's public LLM API; calora does not compile them (no mobile
toolchain in its CI). What calora ran is listed under `validation` in `manifest.json`.

## Checking this bundle

    calora-validate <this folder> --report parity/

generates with these artifacts in their runtimes on each task's held-out prompts and compares them
with the PyTorch models token by token (teacher-forced logits, KV cache against full recomputation,
greedy generations, exact match and perplexity); it exits non-zero on a parity failure.
"""
