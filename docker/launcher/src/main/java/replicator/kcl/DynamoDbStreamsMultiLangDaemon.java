package replicator.kcl;

import com.amazonaws.services.dynamodbv2.streamsadapter.AmazonDynamoDBStreamsAdapterClient;
import com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory;
import com.amazonaws.services.dynamodbv2.streamsadapter.polling.DynamoDBStreamsPollingConfig;
import java.io.IOException;
import java.time.Duration;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.awssdk.auth.credentials.AwsCredentialsProvider;
import software.amazon.awssdk.awscore.retry.AwsRetryStrategy;
import software.amazon.awssdk.core.client.config.ClientOverrideConfiguration;
import software.amazon.awssdk.core.exception.SdkException;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.retries.StandardRetryStrategy;
import software.amazon.awssdk.retries.api.BackoffStrategy;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClientBuilder;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClient;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClientBuilder;
import software.amazon.kinesis.checkpoint.CheckpointConfig;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.CoordinatorConfig;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leases.LeaseManagementConfig;
import software.amazon.kinesis.lifecycle.LifecycleConfig;
import software.amazon.kinesis.metrics.MetricsConfig;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.metrics.NullMetricsFactory;
import software.amazon.kinesis.multilang.MultiLangDaemonConfig;
import software.amazon.kinesis.multilang.config.BuilderDynaBean;
import software.amazon.kinesis.multilang.config.ConfigurationSettableUtils;
import software.amazon.kinesis.multilang.config.MultiLangDaemonConfiguration;
import software.amazon.kinesis.processor.ProcessorConfig;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.processor.ShardRecordProcessorFactory;
import software.amazon.kinesis.processor.StreamTracker;
import software.amazon.kinesis.retrieval.RetrievalConfig;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

/**
 * A MultiLangDaemon for DynamoDB Streams: KCL 3 with the DynamoDB Streams Kinesis
 * Adapter 2.x, running the same multilang record processor (one child per shard) as the
 * stock daemon does for Kinesis.
 *
 * <p>KCL 3's multilang module builds its scheduler for a Kinesis stream only, so this
 * follows the adapter's scheduler recipe instead: a single-stream tracker for the
 * DynamoDB stream ARN, the adapter client in place of the Kinesis client, the adapter's
 * polling configuration, and {@link StreamsSchedulerFactory#createScheduler}. The
 * multilang module still parses the properties file, and its settings (leases,
 * coordinator, polling, metrics, credentials providers) are applied to those
 * configurations the way the stock daemon applies them, so one properties file means the
 * same thing to both daemons.
 *
 * <p>Usage: {@code java -cp 'jars/*' replicator.kcl.DynamoDbStreamsMultiLangDaemon
 * --properties-file FILE}. Exit status: 0 after a clean stop, 1 when the settings are
 * unusable, the scheduler fails or a processor child fails (the multilang processor ends
 * the JVM itself then), 143 after SIGTERM once every child has checkpointed (at once when
 * the scheduler had not finished starting: no child has run then), and 1 after SIGTERM
 * when the graceful shutdown did not complete within shutdownGraceMillis.
 */
public final class DynamoDbStreamsMultiLangDaemon {
    private static final Logger LOG = LoggerFactory.getLogger(DynamoDbStreamsMultiLangDaemon.class);

    /** The retry strategy the adapter's own client uses (DynamoDB's advice for streams). */
    static final int STREAMS_MAX_ATTEMPTS = 10;

    static final Duration STREAMS_BASE_DELAY = Duration.ofMillis(100);
    static final Duration STREAMS_MAX_DELAY = Duration.ofMillis(10_000);
    /** When shutdownGraceMillis is not set: the failover time and this much more. */
    static final long SHUTDOWN_GRACE_MARGIN_MILLIS = 10_000L;

    private static final AtomicBoolean EXITING = new AtomicBoolean(false);

    private DynamoDbStreamsMultiLangDaemon() {}

    public static void main(String[] args) {
        int status;
        try {
            status = run(LauncherSettings.propertiesFile(args));
        } catch (IllegalArgumentException e) {
            // A setting that cannot work: one line that says which, no stack trace.
            LOG.error("Cannot start: {}", e.getMessage());
            status = 1;
        } catch (Throwable t) {
            LOG.error("The DynamoDB Streams daemon stopped on an error", t);
            status = 1;
        }
        EXITING.set(true);
        System.exit(status);
    }

    static int run(String propertiesFile) throws Exception {
        LauncherSettings settings = LauncherSettings.load(propertiesFile);
        settings.checkInitialPosition();
        MultiLangDaemonConfig multiLang = multiLangConfig(settings);
        MultiLangDaemonConfiguration configuration = multiLang.getMultiLangDaemonConfiguration();
        StartWatch start = new StartWatch();
        Scheduler scheduler = scheduler(settings, configuration, multiLang.getRecordProcessorFactory(), start);

        AtomicBoolean failed = new AtomicBoolean(false);
        Thread worker = new Thread(
                () -> {
                    try {
                        scheduler.run();
                    } catch (Throwable t) {
                        LOG.error("The scheduler stopped on an error", t);
                        failed.set(true);
                    }
                },
                "kcl-scheduler");
        long graceMillis = shutdownGraceMillis(configuration);
        Runtime.getRuntime()
                .addShutdownHook(new Thread(() -> onTermination(scheduler, start, graceMillis), "shutdown"));
        LOG.info(
                "Reading {} as application {} (worker {})",
                settings.streamArn(),
                configuration.getApplicationName(),
                configuration.getWorkerIdentifier());
        worker.start();
        worker.join();
        return failed.get() ? 1 : 0;
    }

    /**
     * The multilang module's reading of the file. It fails with a chain of reflection
     * errors around the one that matters; that one is turned into a sentence.
     */
    static MultiLangDaemonConfig multiLangConfig(LauncherSettings settings) throws IOException {
        try {
            return new MultiLangDaemonConfig(settings.file());
        } catch (RuntimeException e) {
            Throwable cause = e;
            while (cause.getCause() != null) {
                cause = cause.getCause();
            }
            String message = String.valueOf(cause.getMessage());
            if (message.contains("credential providers")) {
                throw new IllegalArgumentException(settings.file() + ": " + settings.credentialsProviderSetting()
                        + " names no credentials provider that can be loaded (names are AWS SDK for Java v2"
                        + " providers, such as DefaultCredentialsProvider, or classes on the classpath)");
            }
            throw new IllegalArgumentException(
                    settings.file() + ": the KCL cannot read these properties: " + cause, e);
        }
    }

    static long shutdownGraceMillis(MultiLangDaemonConfiguration configuration) {
        if (configuration.getShutdownGraceMillis() > 0) {
            return configuration.getShutdownGraceMillis();
        }
        long failover = configuration.getFailoverTimeMillis() > 0 ? configuration.getFailoverTimeMillis() : 10_000L;
        return failover + SHUTDOWN_GRACE_MARGIN_MILLIS;
    }

    /**
     * On SIGTERM: each child gets shutdownRequested and checkpoints, then the leases go.
     * The JVM then exits 143; if the shutdown did not complete, 1 instead, so that the
     * supervisor can tell a clean stop from one that left work unfinished. A scheduler
     * still starting has run no child and cannot be stopped before it has started (see
     * {@link StartWatch}): the JVM exits 143 at once.
     */
    private static void onTermination(Scheduler scheduler, StartWatch start, long graceMillis) {
        if (EXITING.get()) {
            return; // main is exiting by itself: the scheduler has already stopped
        }
        if (start.abandonIfStarting()) {
            LOG.info("Process terminated while the KCL scheduler was still starting: no processor has run,"
                    + " so there is nothing to checkpoint; stopping without the graceful shutdown");
            return;
        }
        LOG.info("Process terminated; shutting down gracefully (up to {} ms)", graceMillis);
        try {
            scheduler.startGracefulShutdown().get(graceMillis, TimeUnit.MILLISECONDS);
            LOG.info("Graceful shutdown complete");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            Runtime.getRuntime().halt(1);
        } catch (ExecutionException | TimeoutException e) {
            LOG.error("Graceful shutdown did not complete", e);
            Runtime.getRuntime().halt(1);
        }
    }

    static Scheduler scheduler(
            LauncherSettings settings,
            MultiLangDaemonConfiguration configuration,
            ShardRecordProcessorFactory multiLangProcessors,
            StartWatch start) {
        Region region = Region.of(settings.region());
        MetricsLevel metricsLevel =
                configuration.getMetricsLevel() == null ? MetricsLevel.NONE : configuration.getMetricsLevel();
        if (metricsLevel != MetricsLevel.NONE && settings.hasEndpointOverride()) {
            throw new IllegalArgumentException(settings.file() + ": metricsLevel = " + metricsLevel
                    + " would publish the KCL's metrics to CloudWatch in AWS while the stream and the lease"
                    + " tables are read from kinesisEndpoint/dynamoDBEndpoint; set metricsLevel = NONE"
                    + " (the replicator serves its own metrics on /metrics)");
        }

        // The providers the properties name (AWSCredentialsProvider, and the DynamoDB and
        // CloudWatch variants, which default to it), decoded by the multilang module.
        AwsCredentialsProvider streamsCredentials =
                credentials(settings, configuration.getKinesisCredentialsProvider(), null);
        AwsCredentialsProvider dynamoDbCredentials =
                credentials(settings, configuration.getDynamoDBCredentialsProvider(), streamsCredentials);
        AwsCredentialsProvider cloudWatchCredentials =
                credentials(settings, configuration.getCloudWatchCredentialsProvider(), streamsCredentials);

        AmazonDynamoDBStreamsAdapterClient adapterClient =
                new AmazonDynamoDBStreamsAdapterClient(streamsClient(settings, region, streamsCredentials), region);
        adapterClient.setSkipRecordsBehavior(settings.skipRecordsBehavior());

        DynamoDbAsyncClientBuilder dynamoDb =
                DynamoDbAsyncClient.builder().region(region).credentialsProvider(dynamoDbCredentials);
        settings.dynamoDbEndpoint().ifPresent(dynamoDb::endpointOverride);
        // Used only when metricsLevel is not NONE, which an endpoint override rules out above.
        CloudWatchAsyncClient cloudWatch = CloudWatchAsyncClient.builder()
                .region(region)
                .credentialsProvider(cloudWatchCredentials)
                .build();

        InitialPositionInStreamExtended position = configuration.getInitialPositionInStreamExtended() != null
                ? configuration.getInitialPositionInStreamExtended()
                : InitialPositionInStreamExtended.newInitialPosition(InitialPositionInStream.TRIM_HORIZON);
        StreamTracker stream = StreamsSchedulerFactory.createSingleStreamTracker(settings.streamArn(), position);
        ShardRecordProcessorFactory processors = new ShardRecordProcessorFactory() {
            @Override
            public ShardRecordProcessor shardRecordProcessor() {
                return new MultiLangStreamsProcessor(multiLangProcessors.shardRecordProcessor());
            }
        };
        ConfigsBuilder configs = new ConfigsBuilder(
                stream,
                configuration.getApplicationName(),
                adapterClient,
                dynamoDb.build(),
                cloudWatch,
                configuration.getWorkerIdentifier(),
                processors);

        // Each call of a ConfigsBuilder accessor builds a new object: take each once.
        CheckpointConfig checkpoint = configs.checkpointConfig();
        CoordinatorConfig coordinator = configs.coordinatorConfig();
        LeaseManagementConfig leases = configs.leaseManagementConfig();
        LifecycleConfig lifecycle = configs.lifecycleConfig();
        MetricsConfig metrics = configs.metricsConfig();
        ProcessorConfig processor = configs.processorConfig();
        RetrievalConfig retrieval = configs.retrievalConfig();
        // The adapter wants no pause after a shard sync, but its lease management factory
        // reads this before the adapter sets it, so without this the first shard sync of a
        // new worker would block for the KCL's default of a minute.
        leases.shardSyncIntervalMillis(0);
        applyMultiLangSettings(configuration, configs, checkpoint, coordinator, leases, lifecycle, metrics, processor, retrieval);
        coordinator.workerStateChangeListener(start);

        metrics.metricsLevel(metricsLevel);
        if (metricsLevel == MetricsLevel.NONE) {
            metrics.metricsFactory(new NullMetricsFactory());
        }

        DynamoDBStreamsPollingConfig polling = new DynamoDBStreamsPollingConfig(settings.streamArn(), adapterClient);
        Map<Class<?>, Object> pollingTarget = new HashMap<>();
        pollingTarget.put(PollingConfig.class, polling);
        ConfigurationSettableUtils.resolveFields(configuration.getPollingConfig(), pollingTarget, null, null);
        if (polling.maxRecords() > LauncherSettings.MAX_RECORDS_LIMIT) {
            polling.maxRecords(LauncherSettings.MAX_RECORDS_LIMIT);
        }
        retrieval.retrievalSpecificConfig(polling);

        return StreamsSchedulerFactory.createScheduler(
                checkpoint, coordinator, leases, lifecycle, metrics, processor, retrieval, adapterClient);
    }

    /** The multilang settings applied as the stock daemon applies them (MultiLangDaemonConfiguration). */
    private static void applyMultiLangSettings(
            MultiLangDaemonConfiguration configuration,
            ConfigsBuilder configs,
            CheckpointConfig checkpoint,
            CoordinatorConfig coordinator,
            LeaseManagementConfig leases,
            LifecycleConfig lifecycle,
            MetricsConfig metrics,
            ProcessorConfig processor,
            RetrievalConfig retrieval) {
        Map<Class<?>, Object> targets = new HashMap<>();
        targets.put(ConfigsBuilder.class, configs);
        ConfigurationSettableUtils.resolveFields(
                configuration, targets, Collections.singleton(ConfigsBuilder.class), Collections.singleton(PollingConfig.class));
        for (Object target : List.of(checkpoint, coordinator, leases, lifecycle, metrics, processor, retrieval)) {
            targets.put(target.getClass(), target);
        }
        ConfigurationSettableUtils.resolveFields(
                configuration.getCoordinatorStateTableConfigBean(), coordinator.coordinatorStateTableConfig());
        ConfigurationSettableUtils.resolveFields(
                configuration.getGracefulLeaseHandoffConfigBean(), leases.gracefulLeaseHandoffConfig());
        ConfigurationSettableUtils.resolveFields(
                configuration.getWorkerUtilizationAwareAssignmentConfigBean(),
                leases.workerUtilizationAwareAssignmentConfig());
        ConfigurationSettableUtils.resolveFields(
                configuration.getWorkerMetricStatsTableConfigBean(),
                leases.workerUtilizationAwareAssignmentConfig().workerMetricsTableConfig());
        Set<Class<?>> skip = new HashSet<>(List.of(ConfigsBuilder.class, PollingConfig.class));
        ConfigurationSettableUtils.resolveFields(configuration, targets, null, skip);
    }

    /**
     * The provider a credentials property names, or {@code fallback} when it is not set.
     * The multilang module skips names it cannot load; if none is left, or the chain has
     * no credentials, this says so now rather than at the first AWS call.
     */
    private static AwsCredentialsProvider credentials(
            LauncherSettings settings, BuilderDynaBean configured, AwsCredentialsProvider fallback) {
        if (!configured.isDirty()) {
            if (fallback == null) {
                throw new IllegalArgumentException(settings.file() + ": the property AWSCredentialsProvider is missing"
                        + " (for example AWSCredentialsProvider = DefaultCredentialsProvider)");
            }
            return fallback;
        }
        AwsCredentialsProvider provider = configured.build(AwsCredentialsProvider.class);
        try {
            provider.resolveCredentials();
        } catch (SdkException e) {
            throw new IllegalArgumentException(settings.file() + ": " + settings.credentialsProviderSetting()
                    + " gives no credentials: " + e.getMessage()
                    + " (names are AWS SDK for Java v2 credentials providers, such as DefaultCredentialsProvider)");
        }
        return provider;
    }

    /**
     * The DynamoDB Streams client, with the retry strategy the adapter's own client
     * builds (10 attempts, exponential backoff from 100 ms to 10 s), whether or not an
     * endpoint override is set.
     */
    static DynamoDbStreamsClient streamsClient(
            LauncherSettings settings, Region region, AwsCredentialsProvider credentials) {
        BackoffStrategy backoff = BackoffStrategy.exponentialDelay(STREAMS_BASE_DELAY, STREAMS_MAX_DELAY);
        StandardRetryStrategy retries = AwsRetryStrategy.standardRetryStrategy().toBuilder()
                .maxAttempts(STREAMS_MAX_ATTEMPTS)
                .backoffStrategy(backoff)
                .throttlingBackoffStrategy(backoff)
                .build();
        DynamoDbStreamsClientBuilder streams = DynamoDbStreamsClient.builder()
                .region(region)
                .credentialsProvider(credentials)
                .overrideConfiguration(ClientOverrideConfiguration.builder()
                        .retryStrategy(retries)
                        .build());
        settings.streamsEndpoint().ifPresent(streams::endpointOverride);
        return streams.build();
    }
}
