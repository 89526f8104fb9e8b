package replicator.kcl;

import com.amazonaws.services.dynamodbv2.streamsadapter.AmazonDynamoDBStreamsAdapterClient.SkipRecordsBehavior;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Locale;
import java.util.Optional;
import java.util.OptionalInt;
import java.util.OptionalLong;
import java.util.Properties;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.metrics.MetricsLevel;

/**
 * The settings the launcher reads itself from the job's KCL properties file (the one
 * `replicator run` writes). The multilang module reads the same file for the processor
 * command; everything that decides which stream is read, where, and by whom is read here,
 * because KCL 3's multilang configuration can only describe a Kinesis stream.
 */
final class LauncherSettings {
    /** GetRecords on a DynamoDB stream returns at most this many records. */
    static final int MAX_RECORDS_LIMIT = 1000;

    private final String file;
    private final Properties properties;

    private LauncherSettings(String file, Properties properties) {
        this.file = file;
        this.properties = properties;
    }

    static LauncherSettings load(String file) throws IOException {
        Path path = Paths.get(file);
        Properties properties = new Properties();
        try (InputStream input = Files.newInputStream(path)) {
            properties.load(input);
        }
        return new LauncherSettings(file, properties);
    }

    /** `--properties-file FILE`, or FILE alone, as the stock MultiLangDaemon accepts. */
    static String propertiesFile(String[] args) {
        if (args.length == 2 && "--properties-file".equals(args[0])) {
            return args[1];
        }
        if (args.length == 1 && !args[0].startsWith("-")) {
            return args[0];
        }
        throw new IllegalArgumentException("usage: DynamoDbStreamsMultiLangDaemon --properties-file FILE");
    }

    String file() {
        return file;
    }

    String streamArn() {
        return required("dynamoDBStreamArn");
    }

    String applicationName() {
        return required("applicationName");
    }

    String workerId() {
        return required("workerId");
    }

    String region() {
        return required("regionName");
    }

    /** Endpoint override for the DynamoDB Streams client (the KCL's "kinesis" side). */
    Optional<URI> streamsEndpoint() {
        return optional("kinesisEndpoint").map(URI::create);
    }

    /** Endpoint override for the lease table's DynamoDB client. */
    Optional<URI> dynamoDbEndpoint() {
        return optional("dynamoDBEndpoint").map(URI::create);
    }

    InitialPositionInStream initialPosition() {
        String value = optional("initialPositionInStream").orElse("TRIM_HORIZON");
        return InitialPositionInStream.valueOf(value.toUpperCase(Locale.ROOT));
    }

    int maxRecords() {
        return Math.min(integer("maxRecords").orElse(MAX_RECORDS_LIMIT), MAX_RECORDS_LIMIT);
    }

    long idleTimeBetweenReadsMillis() {
        return number("idleTimeBetweenReadsInMillis").orElse(1000L);
    }

    long failoverTimeMillis() {
        return number("failoverTimeMillis").orElse(10_000L);
    }

    long shutdownGraceMillis() {
        return number("shutdownGraceMillis").orElse(failoverTimeMillis() + 10_000L);
    }

    OptionalLong shardSyncIntervalMillis() {
        return number("shardSyncIntervalMillis");
    }

    OptionalLong parentShardPollIntervalMillis() {
        return number("parentShardPollIntervalMillis");
    }

    OptionalInt maxLeasesForWorker() {
        return integer("maxLeasesForWorker");
    }

    OptionalInt maxLeasesToStealAtOneTime() {
        return integer("maxLeasesToStealAtOneTime");
    }

    boolean callProcessRecordsEvenForEmptyRecordList() {
        return Boolean.parseBoolean(optional("callProcessRecordsEvenForEmptyRecordList").orElse("false"));
    }

    MetricsLevel metricsLevel() {
        return MetricsLevel.valueOf(optional("metricsLevel").orElse("NONE").toUpperCase(Locale.ROOT));
    }

    /** KCL_RETRY unless the job lets trimmed records be skipped (source.on_trimmed_data). */
    SkipRecordsBehavior skipRecordsBehavior() {
        return SkipRecordsBehavior.valueOf(optional("skipRecordsBehavior").orElse("KCL_RETRY"));
    }

    private String required(String key) {
        return optional(key)
                .orElseThrow(() -> new IllegalArgumentException(file + ": the property " + key + " is missing"));
    }

    private Optional<String> optional(String key) {
        String value = properties.getProperty(key);
        return value == null || value.trim().isEmpty() ? Optional.empty() : Optional.of(value.trim());
    }

    private OptionalLong number(String key) {
        Optional<String> value = optional(key);
        if (!value.isPresent()) {
            return OptionalLong.empty();
        }
        try {
            return OptionalLong.of(Long.parseLong(value.get()));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(file + ": " + key + " must be a whole number, got " + value.get());
        }
    }

    private OptionalInt integer(String key) {
        OptionalLong value = number(key);
        return value.isPresent() ? OptionalInt.of(Math.toIntExact(value.getAsLong())) : OptionalInt.empty();
    }
}
