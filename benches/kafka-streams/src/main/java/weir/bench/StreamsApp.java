package weir.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.KStream;

/**
 * The peer of `weir bench kafka-streams`: reads a topic and writes every
 * record to another, either as is ("passthrough") or parsed with Jackson,
 * given the field "seen": true and serialized again ("json") — the work of
 * weir's json-add-field step.
 *
 * <p>Arguments: BOOTSTRAP INPUT OUTPUT APPLICATION_ID MODE THREADS. Prints
 * "running" on stdout once the group is joined and the threads run; stops
 * on SIGTERM.
 */
public final class StreamsApp {
  private static final ObjectMapper MAPPER = new ObjectMapper();

  private StreamsApp() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 6) {
      System.err.println("usage: StreamsApp BOOTSTRAP INPUT OUTPUT APPLICATION_ID json|passthrough THREADS");
      System.exit(2);
    }
    String bootstrap = args[0];
    String input = args[1];
    String output = args[2];
    String applicationId = args[3];
    boolean json = args[4].equals("json");
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[5]));
    props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
    props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
    props.put(StreamsConfig.STATE_DIR_CONFIG,
        Files.createTempDirectory("weir-bench-streams").toString());
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

    StreamsBuilder builder = new StreamsBuilder();
    KStream<byte[], byte[]> stream = builder.stream(input);
    if (json) {
      stream = stream.mapValues(StreamsApp::addField);
    }
    stream.to(output);

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    CountDownLatch stopped = new CountDownLatch(1);
    streams.setStateListener((now, before) -> {
      if (now == KafkaStreams.State.RUNNING) {
        System.out.println("running");
        System.out.flush();
      }
      if (now == KafkaStreams.State.ERROR) {
        System.err.println("kafka streams failed");
        stopped.countDown();
      }
    });
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(Duration.ofSeconds(10));
      stopped.countDown();
    }));
    streams.start();
    stopped.await();
  }

  /** Parses a JSON object, sets "seen": true, serializes it. */
  static byte[] addField(byte[] value) {
    try {
      ObjectNode node = (ObjectNode) MAPPER.readTree(value);
      node.put("seen", true);
      return MAPPER.writeValueAsBytes(node);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
