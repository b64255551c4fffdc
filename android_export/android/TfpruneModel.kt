// A minimal helper for a tfprune bundle: classify a Bitmap with model.tflite, fine-tune
// trainable.tflite on samples collected in the app, keep its state in filesDir.
// Copy the bundle's model.tflite, trainable.tflite, manifest.json and labels.txt into
// src/main/assets/tfprune/ and this file into your sources (set the package).
// Every interpreter call below is mirrored, call for call, by a Python test in tfprune's
// tests/test_android_export.py (named above each method); this file is not compiled there.
package com.example.tfprune

import android.content.Context
import android.graphics.Bitmap
import org.json.JSONArray
import org.json.JSONObject
import org.tensorflow.lite.Interpreter
import java.io.File
import java.io.FileInputStream
import java.io.FileOutputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import kotlin.math.floor

class TfpruneModel(private val context: Context, private val assetDir: String = "tfprune") : AutoCloseable {
    val manifest = JSONObject(asset("manifest.json"))
    val labels: List<String> = asset("labels.txt").trimEnd('\n').split('\n')
    private val input = manifest.getJSONObject("input")
    private val output = manifest.getJSONObject("output")
    private val training = manifest.getJSONObject("training")
    val height = input.getJSONArray("shape").getInt(1)
    val width = input.getJSONArray("shape").getInt(2)
    val batchSize = training.getInt("batch_size")
    private val mean = floats(input.getJSONObject("normalisation").getJSONArray("mean"))
    private val std = floats(input.getJSONObject("normalisation").getJSONArray("std"))
    private val inference = Interpreter(mapAsset("model.tflite"))
    // With the default XNNPACK delegate: it runs the training graph's wide convs, lowered to
    // BATCH_MATMUL (manifest training.conv_impl), on all threads.
    private val trainable = Interpreter(mapAsset("trainable.tflite"))
    private val stateFile = File(context.filesDir, training.getString("fingerprint") + ".state")
    val samples = mutableListOf<Pair<FloatArray, Int>>()

    /** RGB pixels scaled to the model's size, normalised: (pixel / 255 - mean[c]) / std[c]. */
    fun normalise(bitmap: Bitmap): FloatArray {
        val scaled = Bitmap.createScaledBitmap(bitmap, width, height, true)
        val pixels = IntArray(width * height)
        scaled.getPixels(pixels, 0, width, 0, 0, width, height)
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
        val qin = input.optJSONObject("quantization")
        val inBuf: ByteBuffer
        if (qin == null) {
            inBuf = direct(x.size * 4).also { b -> x.forEach { b.putFloat(it) } }
        } else {
            val scale = qin.getDouble("scale").toFloat()
            val zero = qin.getInt("zero_point")
            inBuf = direct(x.size).also { b ->
                x.forEach { b.put((floor(it / scale + 0.5f).toInt() + zero).coerceIn(-128, 127).toByte()) }
            }
        }
        val n = output.getJSONArray("shape").getInt(1)
        val qout = output.optJSONObject("quantization")
        val outBuf = direct(if (qout == null) n * 4 else n)
        inference.runSignature(mapOf(input.getString("name") to inBuf.rewind()),
                               mapOf(output.getString("name") to outBuf), input.getString("signature"))
        outBuf.rewind()
        return FloatArray(n) {
            if (qout == null) outBuf.getFloat()
            else (outBuf.get() - qout.getInt("zero_point")) * qout.getDouble("scale").toFloat()
        }
    }

    fun addSample(bitmap: Bitmap, label: Int) { samples += normalise(bitmap) to label }

    /** One optimiser step on 1..batchSize samples; the rest of the batch is padding (zero
     *  images, label -1: no loss). Returns the mean loss of the real rows.
     *  Test: test_kotlin_train_steps. */
    fun trainStep(batch: List<Pair<FloatArray, Int>>): Float {
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
        trainable.runSignature(mapOf("x" to x.rewind(), "y" to y.rewind()),
                               mapOf("loss" to loss, "correct" to correct), "train")
        return loss.getFloat(0)
    }

    /** `epochs` passes over the collected samples in batches; returns the step losses. */
    fun trainCollected(epochs: Int = 1): List<Float> =
        (1..epochs).flatMap { samples.shuffled().chunked(batchSize).map { trainStep(it) } }

    /** The learning rate of the next train steps (schedules live in the app).
     *  Test: test_kotlin_train_steps. */
    fun setLearningRate(lr: Float) {
        trainable.runSignature(mapOf("learning_rate" to direct(4).putFloat(lr).rewind()),
                               mapOf("learning_rate" to direct(4)), "set_learning_rate")
    }

    /** Logits of the fine-tuned weights (trainable.tflite's infer) for one image.
     *  Test: test_kotlin_save_restore. */
    fun classifyTrained(bitmap: Bitmap): FloatArray {
        val x = direct(batchSize * height * width * 3 * 4)
        normalise(bitmap).forEach { x.putFloat(it) }  // row 0; the other rows stay zero
        val n = output.getJSONArray("shape").getInt(1)
        val logits = direct(batchSize * n * 4)
        trainable.runSignature(mapOf("x" to x.rewind()),
                               mapOf("logits" to logits, "probabilities" to direct(batchSize * n * 4)), "infer")
        return FloatArray(n) { logits.getFloat(it * 4) }
    }

    /** The whole training state (weights, optimiser slots, step, learning rate) to
     *  filesDir/<fingerprint>.state: raw float32, temp file then rename.
     *  Test: test_kotlin_save_restore. */
    fun saveState() {
        val state = direct(training.getInt("state_size") * 4)
        trainable.runSignature(mapOf("unused" to direct(4).putFloat(0f).rewind()), mapOf("state" to state), "save")
        val tmp = File(stateFile.path + ".tmp")
        FileOutputStream(tmp).use { it.channel.write(state.rewind() as ByteBuffer) }
        check(tmp.renameTo(stateFile)) { "cannot rename $tmp to $stateFile" }
    }

    /** Restore the state saveState wrote; returns its step count, null when there is none.
     *  Test: test_kotlin_save_restore. */
    fun restoreState(): Int? {
        if (!stateFile.exists()) return null
        val bytes = stateFile.readBytes()
        check(bytes.size == training.getInt("state_size") * 4) { "$stateFile has ${bytes.size} bytes" }
        val steps = direct(4)
        trainable.runSignature(mapOf("state" to direct(bytes.size).put(bytes).rewind()),
                               mapOf("iterations" to steps), "restore")
        return steps.getFloat(0).toInt()
    }

    /** Per-channel activation sums of the collected samples (the pruning scores' input):
     *  {output name: values}, padding rows marked valid = 0. Test: test_kotlin_filter_stats. */
    fun filterStats(batch: List<FloatArray>): Map<String, FloatArray> {
        require(batch.size in 1..batchSize)
        val x = direct(batchSize * height * width * 3 * 4)
        val valid = direct(batchSize * 4)
        for (i in 0 until batchSize) {
            val image = batch.getOrNull(i)
            for (j in 0 until height * width * 3) x.putFloat(image?.get(j) ?: 0f)
            valid.putFloat(if (image != null) 1f else 0f)
        }
        val specs = signatureOutputs("filter_stats")
        val outputs = specs.mapValues { (_, size) -> direct(size * 4) }
        trainable.runSignature(mapOf("x" to x.rewind(), "valid" to valid.rewind()), outputs, "filter_stats")
        return outputs.mapValues { (name, buf) -> FloatArray(specs.getValue(name)) { buf.getFloat(it * 4) } }
    }

    override fun close() { inference.close(); trainable.close() }

    private fun signatureOutputs(key: String): Map<String, Int> {
        val outs = manifest.getJSONObject("models").getJSONObject("trainable.tflite")
            .getJSONObject("signatures").getJSONObject(key).getJSONArray("outputs")
        return (0 until outs.length()).associate { i ->
            val shape = outs.getJSONObject(i).getJSONArray("shape")
            outs.getJSONObject(i).getString("name") to (0 until shape.length()).fold(1) { n, d -> n * shape.getInt(d) }
        }
    }

    private fun asset(name: String) = context.assets.open("$assetDir/$name").bufferedReader().use { it.readText() }

    private fun mapAsset(name: String): MappedByteBuffer = context.assets.openFd("$assetDir/$name").use { fd ->
        FileInputStream(fd.fileDescriptor).use {
            it.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }
    }

    private fun direct(bytes: Int): ByteBuffer = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())

    private fun floats(a: JSONArray) = FloatArray(a.length()) { a.getDouble(it).toFloat() }
}
