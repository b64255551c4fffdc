// STUB for compiling TfpruneModel.kt in tfprune CI only: the public signatures the helper uses,
// from LiteRT's Kotlin sources (Model.kt, TensorBuffer.kt, Common.kt, Environment.kt; see
// README.md). Bodies throw; native handles and the options' key maps are left out.
package com.google.ai.edge.litert

private fun stub(): Nothing = throw UnsupportedOperationException("stub")

enum class Accelerator private constructor(val value: Int) {
    NONE(0),
    CPU(1),
    GPU(2),
    NPU(3);
}

class LiteRtException(val status: Int, message: String) : Exception(message)

abstract class JniHandle internal constructor(internal val handle: Long) : AutoCloseable {
    protected abstract fun destroy()
    override final fun close() = destroy()
}

class Environment private constructor(handle: Long) : JniHandle(handle) {
    override fun destroy() = stub()

    companion object {
        @Throws(LiteRtException::class)
        @JvmOverloads
        @JvmStatic
        fun create(options: Map<Int, Any> = mapOf()): Environment = stub()
    }
}

class TensorBuffer internal constructor(handle: Long) : JniHandle(handle) {
    @Throws(LiteRtException::class) fun writeInt(data: IntArray): Unit = stub()
    @Throws(LiteRtException::class) fun writeFloat(data: FloatArray): Unit = stub()
    @Throws(LiteRtException::class) fun writeInt8(data: ByteArray): Unit = stub()
    @Throws(LiteRtException::class) fun writeBoolean(data: BooleanArray): Unit = stub()
    @Throws(LiteRtException::class) fun writeLong(data: LongArray): Unit = stub()
    @Throws(LiteRtException::class) fun readInt(): IntArray = stub()
    @Throws(LiteRtException::class) fun readFloat(): FloatArray = stub()
    @Throws(LiteRtException::class) fun readInt8(): ByteArray = stub()
    @Throws(LiteRtException::class) fun readBoolean(): BooleanArray = stub()
    @Throws(LiteRtException::class) fun readLong(): LongArray = stub()
    override fun destroy() = stub()
}

class CompiledModel private constructor(handle: Long, private val env: Environment) : JniHandle(handle) {

    data class CpuOptions constructor(
        val numThreads: Int? = null,
        val xnnPackFlags: Int? = null,
        val xnnPackWeightCachePath: String? = null
    )

    data class GpuOptions constructor(
        val constantTensorSharing: Boolean? = null,
        val infiniteFloatCapping: Boolean? = null,
        val allowSrcQuantizedFcConvOps: Boolean? = null
    )

    class Options constructor(internal val accelerators: Set<Accelerator>) {
        constructor(vararg accelerators: Accelerator) : this(setOf(*accelerators)) {}

        var cpuOptions: CpuOptions? = null
        var gpuOptions: GpuOptions? = null

        companion object {
            @JvmStatic val CPU = Options(Accelerator.CPU)
        }
    }

    @Throws(LiteRtException::class)
    @JvmOverloads
    fun createInputBuffers(signatureIndex: Int = 0): List<TensorBuffer> = stub()

    @Throws(LiteRtException::class)
    fun createInputBuffers(signature: String): List<TensorBuffer> = stub()

    @Throws(LiteRtException::class)
    @JvmOverloads
    fun createOutputBuffers(signatureIndex: Int = 0): List<TensorBuffer> = stub()

    @Throws(LiteRtException::class)
    fun createOutputBuffers(signature: String): List<TensorBuffer> = stub()

    @Throws(LiteRtException::class)
    @JvmOverloads
    fun run(inputs: List<TensorBuffer>, signatureIndex: Int = 0): List<TensorBuffer> = stub()

    @Throws(LiteRtException::class)
    @JvmOverloads
    fun run(inputs: List<TensorBuffer>, outputs: List<TensorBuffer>, signatureIndex: Int = 0): Unit = stub()

    @Throws(LiteRtException::class)
    fun run(inputs: List<TensorBuffer>, outputs: List<TensorBuffer>, signature: String): Unit = stub()

    override fun destroy() = stub()

    companion object {
        @Throws(LiteRtException::class)
        @JvmOverloads
        @JvmStatic
        fun create(
            assetManager: android.content.res.AssetManager,
            assetName: String,
            options: Options = Options.CPU,
            optionalEnv: Environment? = null
        ): CompiledModel = stub()

        @Throws(LiteRtException::class)
        @JvmOverloads
        @JvmStatic
        fun create(
            filePath: String,
            options: Options = Options.CPU,
            optionalEnv: Environment? = null
        ): CompiledModel = stub()
    }
}
