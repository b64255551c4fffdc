// A helper for a tfprune bundle: classify a Bitmap with model.tflite (LiteRT CompiledModel, GPU
// first when the bundle's GPU check passed, else CPU), fine-tune trainable.tflite on samples
// collected in the app (Interpreter API, CPU), keep its state in filesDir.
// Copy the bundle's model.tflite, trainable.tflite, manifest.json and labels.txt into
// src/main/assets/tfprune/ and this file into your sources (set the package).
// Thread safety: every public method takes one lock, so the helper may be called from several
// threads; run training (trainStep, trainCollected, filterStats, saveState, restoreState) off
// the UI thread: a step takes tens to hundreds of milliseconds.
// Every interpreter call below is mirrored, call for call, by a Python test in tfprune's
// tests/test_android_export.py (named above each method); tfprune's CI compiles this file
// with kotlinc against stubs of the Android and LiteRT classes it uses (tests/kotlin_stubs/).
package com.example.tfprune

import android.content.Context
import android.graphics.Bitmap
import android.util.AtomicFile
import android.util.Log
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import org.json.JSONArray
import org.json.JSONObject
import org.tensorflow.lite.Interpreter
import java.io.File
import java.io.FileInputStream
import java.io.IOException
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import kotlin.math.floor

class TfpruneModel @JvmOverloads constructor(
    private val context: Context,
    private val assetDir: String = "tfprune",
    /** CPU threads for both models (Interpreter.Options().setNumThreads, CpuOptions). */
    val numThreads: Int = Runtime.getRuntime().availableProcessors().coerceIn(1, 4)
) : AutoCloseable {
    private val lock = Any()
    val manifest = JSONObject(asset("manifest.json"))
    val labels: List<String> = asset("labels.txt").trimEnd('\n').split('\n')
    private val input = manifest.getJSONObject("input")
    private val output = manifest.getJSONObject("output")
    private val training = manifest.getJSONObject("training")
    val height = input.getJSONArray("shape").getInt(1)
    val width = input.getJSONArray("shape").getInt(2)
    val batchSize = training.getInt("batch_size")
    private val numClasses = output.getJSONArray("shape").getInt(1)
    private val mean = floats(input.getJSONObject("normalisation").getJSONArray("mean"))
    private val std = floats(input.getJSONObject("normalisation").getJSONArray("std"))
    private val stateFile = AtomicFile(File(context.filesDir, training.getString("fingerprint") + ".state"))
    private val samples = mutableListOf<Pair<FloatArray, Int>>()
    private var inference: CompiledModel? = null
    private var trainable: Interpreter? = null  // loaded on first use: inference-only apps never pay for it
    private var closed = false

    /** "gpu", "gpu+cpu" or "cpu": where classify runs (after the first classify; null before). */
    var inferenceAccelerator: String? = null
        private set

    /** RGB pixels scaled to the model's size, normalised: (pixel / 255 - mean[c]) / std[c].
     *  Any bitmap config works: HARDWARE (what ImageDecoder, Glide and Coil often return) and
     *  others are copied to ARGB_8888 first, as getPixels needs. */
    fun normalise(bitmap: Bitmap): FloatArray {
        val argb = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        val scaled = Bitmap.createScaledBitmap(argb, width, height, true)
        val pixels = IntArray(width * height)
        scaled.getPixels(pixels, 0, width, 0, 0, width, height)
        if (scaled !== argb && scaled !== bitmap) scaled.recycle()
        if (argb !== bitmap) argb.recycle()
        val x = FloatArray(pixels.size * 3)
        for (i in pixels.indices) {
            val rgb = intArrayOf((pixels[i] shr 16) and 0xFF, (pixels[i] shr 8) and 0xFF, pixels[i] and 0xFF)
            for (c in 0 until 3) x[i * 3 + c] = (rgb[c] / 255f - mean[c]) / std[c]
        }
        return x
    }

    /** Logits over labels (dequantised for an int8 model). Test: test_kotlin_classify. */
    fun classify(bitmap: Bitmap): FloatArray {
        val x = normalise(bitmap)
        synchronized(lock) {
            val model = inferenceModel()
            val inputs = model.createInputBuffers()
            val outputs = model.createOutputBuffers()
            try {
                val qin = input.optJSONObject("quantization")
                if (qin == null) {
                    inputs[0].writeFloat(x)
                } else {
                    val scale = qin.getDouble("scale").toFloat()
                    val zero = qin.getInt("zero_point")
                    inputs[0].writeInt8(ByteArray(x.size) {
                        (floor(x[it] / scale + 0.5f).toInt() + zero).coerceIn(-128, 127).toByte()
                    })
                }
                model.run(inputs, outputs)
                val qout = output.optJSONObject("quantization")
                if (qout == null) return outputs[0].readFloat()
                val q = outputs[0].readInt8()
                val scale = qout.getDouble("scale").toFloat()
                val zero = qout.getInt("zero_point")
                return FloatArray(numClasses) { (q[it] - zero) * scale }
            } finally {
                inputs.forEach { it.close() }
                outputs.forEach { it.close() }
            }
        }
    }

    fun addSample(bitmap: Bitmap, label: Int) {
        require(label in 0 until numClasses) { "label $label is not a line of labels.txt" }
        val x = normalise(bitmap)
        synchronized(lock) { samples += x to label }
    }

    val sampleCount: Int get() = synchronized(lock) { samples.size }

    fun clearSamples() = synchronized(lock) { samples.clear() }

    /** The first `n` collected images (normalised), e.g. for filterStats. */
    fun sampleImages(n: Int = batchSize): List<FloatArray> = synchronized(lock) { samples.take(n).map { it.first } }

    /** One optimiser step on 1..batchSize samples; the rest of the batch is padding (zero
     *  images, label -1: no loss). Returns the mean loss of the real rows.
     *  Test: test_kotlin_train_steps. */
    fun trainStep(batch: List<Pair<FloatArray, Int>>): Float = synchronized(lock) {
        require(batch.size in 1..batchSize) { "1..$batchSize samples per step, got ${batch.size}" }
        val x = direct(batchSize * height * width * 3 * 4)
        val y = direct(batchSize * 4)
        for (i in 0 until batchSize) {
            val sample = batch.getOrNull(i)
            for (j in 0 until height * width * 3) x.putFloat(sample?.first?.get(j) ?: 0f)
            y.putInt(sample?.second ?: -1)
        }
        val loss = direct(4)
        val correct = direct(4)
        trainer().runSignature(mapOf<String, Any>("x" to x.rewind(), "y" to y.rewind()),
                               mapOf<String, Any>("loss" to loss, "correct" to correct), "train")
        loss.getFloat(0)
    }

    /** `epochs` passes over the collected samples in batches; returns the step losses. */
    fun trainCollected(epochs: Int = 1): List<Float> = synchronized(lock) {
        (1..epochs).flatMap { samples.shuffled().chunked(batchSize).map { trainStep(it) } }
    }

    /** The learning rate of the next train steps (schedules live in the app).
     *  Test: test_kotlin_train_steps. */
    fun setLearningRate(lr: Float) = synchronized(lock) {
        trainer().runSignature(mapOf<String, Any>("learning_rate" to direct(4).putFloat(lr).rewind()),
                               mapOf<String, Any>("learning_rate" to direct(4)), "set_learning_rate")
    }

    /** Logits of the fine-tuned weights (trainable.tflite's infer) for one image.
     *  Test: test_kotlin_save_restore. */
    fun classifyTrained(bitmap: Bitmap): FloatArray {
        val image = normalise(bitmap)
        synchronized(lock) {
            val x = direct(batchSize * height * width * 3 * 4)
            image.forEach { x.putFloat(it) }  // row 0; the other rows stay zero
            val logits = direct(batchSize * numClasses * 4)
            trainer().runSignature(mapOf<String, Any>("x" to x.rewind()),
                                   mapOf<String, Any>("logits" to logits, "probabilities" to direct(batchSize * numClasses * 4)), "infer")
            return FloatArray(numClasses) { logits.getFloat(it * 4) }
        }
    }

    /** The whole training state (weights, optimiser slots, step, learning rate) to
     *  filesDir/<fingerprint>.state: raw float32 via AtomicFile (written, synced, renamed).
     *  Test: test_kotlin_save_restore. */
    fun saveState() = synchronized(lock) {
        val state = direct(training.getInt("state_size") * 4)
        trainer().runSignature(mapOf<String, Any>("unused" to direct(4).putFloat(0f).rewind()),
                               mapOf<String, Any>("state" to state), "save")
        val bytes = ByteArray(state.capacity())
        state.rewind()
        state.get(bytes)
        val out = stateFile.startWrite()
        try {
            out.write(bytes)
            stateFile.finishWrite(out)  // fsyncs, then renames over the old state
        } catch (e: IOException) {
            stateFile.failWrite(out)
            throw e
        }
    }

    /** Restore the state saveState wrote; returns its step count, or null when there is none
     *  usable: missing, or of the wrong size (a truncated write, another export), which is
     *  logged and ignored so that a bad file never stops the app from starting.
     *  Test: test_kotlin_save_restore. */
    fun restoreState(): Int? = synchronized(lock) {
        if (!stateFile.baseFile.exists()) return null
        val bytes = try {
            stateFile.readFully()
        } catch (e: IOException) {
            Log.w(TAG, "cannot read ${stateFile.baseFile}; starting from the bundled weights", e)
            return null
        }
        val expected = training.getInt("state_size") * 4
        if (bytes.size != expected) {
            Log.w(TAG, "${stateFile.baseFile} has ${bytes.size} bytes, not $expected; ignored")
            return null
        }
        val steps = direct(4)
        trainer().runSignature(mapOf<String, Any>("state" to direct(bytes.size).put(bytes).rewind()),
                               mapOf<String, Any>("iterations" to steps), "restore")
        steps.getFloat(0).toInt()
    }

    /** Per-channel activation sums of up to batchSize images (the pruning scores' input):
     *  {output name: values}, padding rows marked valid = 0. Every output name is its own
     *  tensor (checked by tfprune's validation gate), so runSignature fills each buffer.
     *  Test: test_kotlin_filter_stats, test_android_subgraph0_output_mapping. */
    fun filterStats(batch: List<FloatArray>): Map<String, FloatArray> = synchronized(lock) {
        require(batch.size in 1..batchSize) { "1..$batchSize images, got ${batch.size}" }
        val x = direct(batchSize * height * width * 3 * 4)
        val valid = direct(batchSize * 4)
        for (i in 0 until batchSize) {
            val image = batch.getOrNull(i)
            for (j in 0 until height * width * 3) x.putFloat(image?.get(j) ?: 0f)
            valid.putFloat(if (image != null) 1f else 0f)
        }
        val specs = signatureOutputs("filter_stats")
        val outputs = specs.mapValues { (_, size) -> direct(size * 4) }
        trainer().runSignature(mapOf<String, Any>("x" to x.rewind(), "valid" to valid.rewind()), outputs, "filter_stats")
        outputs.mapValues { (name, buf) -> FloatArray(specs.getValue(name)) { buf.getFloat(it * 4) } }
    }

    override fun close() {
        synchronized(lock) {
            closed = true
            try {
                inference?.close()
            } finally {
                inference = null
                trainable?.close()
                trainable = null
            }
        }
    }

    /** model.tflite as a CompiledModel: on the GPU (CPU for ops it does not take) when the
     *  bundle's GPU check ran and passed, else, or when the GPU cannot be used, on the CPU. */
    private fun inferenceModel(): CompiledModel {
        check(!closed) { "TfpruneModel is closed" }
        inference?.let { return it }
        val path = "$assetDir/model.tflite"
        val cpu = CompiledModel.Options(Accelerator.CPU)
        cpu.cpuOptions = CompiledModel.CpuOptions(numThreads = numThreads)
        var model: CompiledModel? = null
        val gpuCheck = gpuCheck()
        if (gpuCheck != null) {
            // GPU alone when the check found every op accelerated: create() then throws
            // instead of quietly running on the CPU (no litert-gpu artifact, no usable GPU)
            val full = gpuCheck.optBoolean("fully_accelerated", false)
            val gpu = if (full) CompiledModel.Options(Accelerator.GPU)
                      else CompiledModel.Options(Accelerator.GPU, Accelerator.CPU)
            gpu.cpuOptions = CompiledModel.CpuOptions(numThreads = numThreads)
            try {
                model = CompiledModel.create(context.assets, path, gpu)
                inferenceAccelerator = if (full) "gpu" else "gpu+cpu"
            } catch (e: Exception) {  // no GPU accelerator, driver refused the model: fall back
                Log.w(TAG, "GPU not available for $path, using the CPU", e)
            }
        }
        if (model == null) {
            model = CompiledModel.create(context.assets, path, cpu)
            inferenceAccelerator = "cpu"
        }
        inference = model
        return model
    }

    /** The bundle's GPU check of model.tflite when it ran and passed, else null. */
    private fun gpuCheck(): JSONObject? {
        val gpu = manifest.optJSONObject("validation")?.optJSONObject("files")
            ?.optJSONObject("model.tflite")?.optJSONObject("gpu") ?: return null
        return if (gpu.optString("check") == "run" && gpu.optBoolean("passed", false)) gpu else null
    }

    private fun trainer(): Interpreter {
        check(!closed) { "TfpruneModel is closed" }
        trainable?.let { return it }
        val options = Interpreter.Options().setNumThreads(numThreads)
        return Interpreter(mapAsset("trainable.tflite"), options).also { trainable = it }
    }

    private fun signatureOutputs(key: String): Map<String, Int> {
        val outs = manifest.getJSONObject("models").getJSONObject("trainable.tflite")
            .getJSONObject("signatures").getJSONObject(key).getJSONArray("outputs")
        return (0 until outs.length()).associate { i ->
            val shape = outs.getJSONObject(i).getJSONArray("shape")
            outs.getJSONObject(i).getString("name") to (0 until shape.length()).fold(1) { n, d -> n * shape.getInt(d) }
        }
    }

    private fun asset(name: String) = context.assets.open("$assetDir/$name").bufferedReader().use { it.readText() }

    private fun mapAsset(name: String): MappedByteBuffer {
        val fd = context.assets.openFd("$assetDir/$name")
        try {
            return FileInputStream(fd.fileDescriptor).use {
                it.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        } finally {
            fd.close()
        }
    }

    private fun direct(bytes: Int): ByteBuffer = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())

    private fun floats(a: JSONArray) = FloatArray(a.length()) { a.getDouble(it).toFloat() }

    private companion object {
        const val TAG = "TfpruneModel"
    }
}
