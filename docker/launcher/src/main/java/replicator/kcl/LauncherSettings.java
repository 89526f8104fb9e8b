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
import java.util.Properties;

/**
 * The few settings of the job's KCL properties file (the one `replicator run` writes) that
 * KCL 3's multilang configuration has no place for: which DynamoDB stream is read, the region
 * and endpoints the launcher's own clients use, and what the adapter does with trimmed
 * records. Everything else in the file (lease, coordinator, polling, metrics and credentials
 * settings) is read by the multilang module itself, exactly as the stock MultiLangDaemon
 * reads it, and applied by {@link DynamoDbStreamsMultiLangDaemon}.
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

    String region() {
        return required("regionName");
    }

    /** Endpoint override for the DynamoDB Streams client (the KCL's "kinesis" side). */
    Optional<URI> streamsEndpoint() {
        return optional("kinesisEndpoint").map(URI::create);
    }

    /** Endpoint override for the lease tables' DynamoDB client. */
    Optional<URI> dynamoDbEndpoint() {
        return optional("dynamoDBEndpoint").map(URI::create);
    }

    /** True when the job reads a local emulator rather than AWS. */
    boolean hasEndpointOverride() {
        return streamsEndpoint().isPresent() || dynamoDbEndpoint().isPresent();
    }

    /** What the file says about credentials, for messages: the key is matched as the KCL matches it. */
    String credentialsProviderSetting() {
        for (String key : properties.stringPropertyNames()) {
            if (key.toLowerCase(Locale.ROOT).equals("awscredentialsprovider")) {
                return key + " = " + properties.getProperty(key).trim();
            }
        }
        return "AWSCredentialsProvider (not set)";
    }

    /**
     * Refuses a start position the adapter cannot honour, before the multilang module
     * parses the file (it would fail on AT_TIMESTAMP with a stack trace, or take a start
     * time the adapter then rejects).
     */
    void checkInitialPosition() {
        String position = optional("initialPositionInStream").orElse("TRIM_HORIZON").toUpperCase(Locale.ROOT);
        boolean startTime = optional("initialPositionInStreamExtended").isPresent();
        if (startTime || !(position.equals("TRIM_HORIZON") || position.equals("LATEST"))) {
            throw new IllegalArgumentException(file + ": "
                    + (startTime ? "initialPositionInStreamExtended (a start time, AT_TIMESTAMP)" : "initialPositionInStream = " + position)
                    + " is not supported for a DynamoDB stream: the DynamoDB Streams Kinesis Adapter starts new"
                    + " leases only at TRIM_HORIZON or LATEST");
        }
    }

    /** KCL_RETRY unless the job lets trimmed records be skipped (source.on_trimmed_data). */
    SkipRecordsBehavior skipRecordsBehavior() {
        String value = optional("skipRecordsBehavior").orElse("KCL_RETRY");
        try {
            return SkipRecordsBehavior.valueOf(value);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                    file + ": skipRecordsBehavior must be KCL_RETRY or SKIP_RECORDS_TO_TRIM_HORIZON, got " + value);
        }
    }

    private String required(String key) {
        return optional(key)
                .orElseThrow(() -> new IllegalArgumentException(file + ": the property " + key + " is missing"));
    }

    private Optional<String> optional(String key) {
        String value = properties.getProperty(key);
        return value == null || value.trim().isEmpty() ? Optional.empty() : Optional.of(value.trim());
    }
}
