// The Kafka Streams peer of `access-eval run` for bench/kafka/peers.py: the same job on the same
// topics, written the way a Kafka Streams user would. Attempts (JSON) join a GlobalKTable of the
// settings topic by target account; the decision of the brief (same account, unrestricted, monitor
// permit / would-be deny, limited enforced deny) decides; the events that access-eval emits are
// written as JSON to the output topic, exactly once (exactly_once_v2, one stream thread).
//
// It does less than access-eval, on purpose, so the multiple measured against it is not flattered:
// no validation beyond what the decision reads (a record that does not parse is dropped, not
// dead-lettered), the latest settings instead of the version in force at event time (the bench's
// settings do not change while it drains), exact-match ids (no normalisation), JSON out instead of
// Avro, no metrics beyond Kafka Streams' own. Kafka Streams' default commit interval under
// exactly-once (100 ms; access-eval's is 50 ms) is kept.
//
// Usage: java -cp <kafka-streams jars>:<classes> KStreamsPeer BOOTSTRAP APP_ID SETTINGS ATTEMPTS OUT [STATE_DIR]

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.GlobalKTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.Stores;

public final class KStreamsPeer {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** One identity type's rule: its state and allowlist. */
    record Rule(String state, Set<String> allowed) {}

    /** An attempt, the fields the decision and the event read. */
    record Attempt(JsonNode doc, String account, String identityAccount, String identityType) {}

    /** Parsed settings per account, reused while the raw document is unchanged (parsing per lookup
     *  would cost the peer more than the decision itself). Only the stream thread reads it. */
    private static final Map<String, Map.Entry<String, Map<String, Rule>>> PARSED = new HashMap<>();

    static Attempt parse(String value) {
        try {
            JsonNode doc = JSON.readTree(value);
            JsonNode identity = doc.get("identity");
            return new Attempt(doc, doc.get("account_id").asText(), identity.get("account_id").asText(),
                    identity.get("type").asText());
        } catch (Exception e) {
            return null;
        }
    }

    static Map<String, Rule> rules(String account, String raw) {
        Map.Entry<String, Map<String, Rule>> cached = PARSED.get(account);
        if (cached != null && cached.getKey().equals(raw)) {
            return cached.getValue();
        }
        Map<String, Rule> rules = new HashMap<>();
        try {
            JsonNode types = JSON.readTree(raw).path("external_account_identity_interaction").path("identity_types");
            types.properties().forEach(t -> {
                Set<String> allowed = new HashSet<>();
                t.getValue().path("external_allowed_accounts").forEach(a -> allowed.add(a.asText()));
                rules.put(t.getKey(), new Rule(t.getValue().path("state").asText("enabled"), allowed));
            });
        } catch (Exception e) {
            // an unreadable document restricts nothing
        }
        PARSED.put(account, Map.entry(raw, rules));
        return rules;
    }

    /** The event access-eval emits for this attempt, or null when it emits none. */
    static String evaluate(Attempt a, String settings) {
        if (settings == null) {
            return null; // unrestricted
        }
        Rule rule = rules(a.account(), settings).get(a.identityType());
        if (rule == null || !(rule.state().equals("monitor") || rule.state().equals("limited"))) {
            return null; // unrestricted
        }
        boolean allowed = rule.allowed().contains(a.identityAccount());
        boolean limited = rule.state().equals("limited");
        if (limited && allowed) {
            return null; // limited permits are not reported
        }
        ObjectNode event = JSON.createObjectNode();
        event.put("attemptId", a.doc().path("id").asText());
        event.put("eventTime", a.doc().path("event_time").asText());
        event.put("accountId", a.account());
        event.set("identity", a.doc().get("identity"));
        event.put("action", a.doc().path("action").asText());
        event.put("state", rule.state());
        event.put("decision", allowed ? "Permit" : "Deny");
        event.put("isEnforced", limited);
        try {
            return JSON.writeValueAsString(event);
        } catch (Exception e) {
            return null;
        }
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], appId = args[1], settingsTopic = args[2], attemptsTopic = args[3], out = args[4];
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args.length > 5 ? args[5] : "/tmp/kstreams-peer-" + appId);
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        GlobalKTable<String, String> settings = builder.globalTable(settingsTopic,
                Consumed.with(Serdes.String(), Serdes.String()),
                Materialized.<String, String>as(Stores.inMemoryKeyValueStore("settings")));
        builder.stream(attemptsTopic, Consumed.with(Serdes.String(), Serdes.String()))
                .mapValues(KStreamsPeer::parse)
                .filter((k, a) -> a != null && !a.account().equals(a.identityAccount()))
                .leftJoin(settings, (k, a) -> a.account(), KStreamsPeer::evaluate)
                .filter((k, v) -> v != null)
                .to(out, Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            stopped.countDown();
        }));
        streams.start();
        System.out.println("peer started: " + appId);
        stopped.await();
    }
}
