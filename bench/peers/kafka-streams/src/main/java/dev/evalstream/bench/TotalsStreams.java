package dev.evalstream.bench;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams peer of evalstream's {@code totals} processor (processors/totals): for every
 * {@code evalstream.runtime.TotalsInput {key, amount}} it adds {@code amount} to the running total
 * of {@code key} in a changelogged key-value store and emits one
 * {@code evalstream.runtime.TotalsUpdate {key, amount, total, source_*}} per input.
 *
 * <p>Like-for-like with evalstream on purpose: exactly_once_v2, a 100 ms commit interval (both
 * defaults), the record cache off so every update is emitted at once, one stream thread (one
 * engine thread in evalstream), an in-memory store backed by its changelog topic (evalstream keeps
 * state in memory, backed by its changelog), and the same wire format: Avro single-object
 * encoding with the specification's CRC-64-AVRO fingerprint, which is what evalstream's codec
 * writes without a schema registry.
 *
 * <p>Usage: {@code TotalsStreams --bootstrap HOST:PORT --application-id ID --input TOPIC
 * --output TOPIC --state-dir DIR --output-schema FILE --input-schema FILE [--input-schema FILE]...}
 * (the first input schema is the current one; the others are older versions it must still read).
 * Runs until SIGTERM, then closes cleanly (commits the open transaction).
 */
public final class TotalsStreams {
    private static final String STORE = "totals";

    private TotalsStreams() {}

    public static void main(String[] args) throws Exception {
        String bootstrap = null, appId = null, input = null, output = null, stateDir = null;
        String outputSchemaFile = null;
        List<String> inputSchemaFiles = new ArrayList<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            String v = args[i + 1];
            switch (args[i]) {
                case "--bootstrap" -> bootstrap = v;
                case "--application-id" -> appId = v;
                case "--input" -> input = v;
                case "--output" -> output = v;
                case "--state-dir" -> stateDir = v;
                case "--output-schema" -> outputSchemaFile = v;
                case "--input-schema" -> inputSchemaFiles.add(v);
                default -> throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (bootstrap == null || appId == null || input == null || output == null
                || stateDir == null || outputSchemaFile == null || inputSchemaFiles.isEmpty()) {
            throw new IllegalArgumentException("missing arguments; see the class documentation");
        }

        Schema inputSchema = parse(inputSchemaFiles.get(0));
        BinaryMessageDecoder<GenericRecord> decoder =
                new BinaryMessageDecoder<>(GenericData.get(), inputSchema);
        for (String older : inputSchemaFiles.subList(1, inputSchemaFiles.size())) {
            decoder.addSchema(parse(older));
        }
        Schema outputSchema = parse(outputSchemaFile);
        BinaryMessageEncoder<GenericRecord> encoder =
                new BinaryMessageEncoder<>(GenericData.get(), outputSchema);

        Deserializer<GenericRecord> inputDeserializer = (topic, bytes) -> {
            try {
                return decoder.decode(bytes);
            } catch (IOException e) {
                throw new org.apache.kafka.common.errors.SerializationException(e);
            }
        };
        Serializer<GenericRecord> outputSerializer = (topic, record) -> {
            try {
                ByteBuffer b = encoder.encode(record);
                byte[] out = new byte[b.remaining()];
                b.get(out);
                return out;
            } catch (IOException e) {
                throw new org.apache.kafka.common.errors.SerializationException(e);
            }
        };
        Serde<GenericRecord> inputSerde = Serdes.serdeFrom((t, r) -> {
            throw new UnsupportedOperationException("the peer never writes inputs");
        }, inputDeserializer);
        Serde<GenericRecord> outputSerde = Serdes.serdeFrom(outputSerializer, (t, b) -> {
            throw new UnsupportedOperationException("the peer never reads outputs");
        });

        StreamsBuilder builder = new StreamsBuilder();
        builder.addStateStore(Stores.keyValueStoreBuilder(
                Stores.inMemoryKeyValueStore(STORE), Serdes.String(), Serdes.Long()));
        builder.stream(input, Consumed.with(Serdes.String(), inputSerde))
                .process(() -> new Totals(outputSchema), STORE)
                .to(output, Produced.with(Serdes.String(), outputSerde));

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.STATE_DIR_CONFIG, new File(stateDir).getAbsolutePath());
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            stopped.countDown();
        }, "shutdown"));
        streams.start();
        stopped.await();
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.exit(1);
        }
    }

    private static Schema parse(String file) throws IOException {
        return new Schema.Parser().parse(new File(file));
    }

    /** Keyed running totals; the same logic as processors/totals/src/lib.rs. */
    static final class Totals implements Processor<String, GenericRecord, String, GenericRecord> {
        private final Schema outputSchema;
        private ProcessorContext<String, GenericRecord> context;
        private KeyValueStore<String, Long> store;

        Totals(Schema outputSchema) {
            this.outputSchema = outputSchema;
        }

        @Override
        public void init(ProcessorContext<String, GenericRecord> context) {
            this.context = context;
            this.store = context.getStateStore(STORE);
        }

        @Override
        public void process(Record<String, GenericRecord> record) {
            GenericRecord in = record.value();
            String key = in.get("key").toString();
            long amount = (Long) in.get("amount");
            Long previous = store.get(key);
            long total = Math.addExact(previous == null ? 0L : previous, amount);
            store.put(key, total);
            RecordMetadata source = context.recordMetadata().orElseThrow();
            GenericRecord update = new GenericData.Record(outputSchema);
            update.put("key", key);
            update.put("amount", amount);
            update.put("total", total);
            update.put("source_topic", source.topic());
            update.put("source_partition", source.partition());
            update.put("source_offset", source.offset());
            context.forward(record.withKey(key).withValue(update));
        }
    }
}
