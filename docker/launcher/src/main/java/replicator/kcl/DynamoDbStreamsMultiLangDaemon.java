package replicator.kcl;

import com.amazonaws.services.dynamodbv2.streamsadapter.AmazonDynamoDBStreamsAdapterClient;
import com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory;
import com.amazonaws.services.dynamodbv2.streamsadapter.polling.DynamoDBStreamsPollingConfig;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.awssdk.auth.credentials.AwsCredentialsProvider;
import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClientBuilder;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClient;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClientBuilder;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.CoordinatorConfig;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leases.LeaseManagementConfig;
import software.amazon.kinesis.metrics.MetricsConfig;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.metrics.NullMetricsFactory;
import software.amazon.kinesis.multilang.MultiLangDaemonConfig;
import software.amazon.kinesis.processor.ProcessorConfig;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.processor.ShardRecordProcessorFactory;
import software.amazon.kinesis.processor.StreamTracker;
import software.amazon.kinesis.retrieval.RetrievalConfig;

/**
 * A MultiLangDaemon for DynamoDB Streams: KCL 3 with the DynamoDB Streams Kinesis
 * Adapter 2.x, running the same multilang record processor (one child per shard) as the
 * stock daemon does for Kinesis.
 *
 * <p>KCL 3's multilang module builds its scheduler for a Kinesis stream only, so this
 * follows the adapter's scheduler recipe instead: a single-stream tracker for the
 * DynamoDB stream ARN, the adapter client in place of the Kinesis client, the adapter's
 * polling configuration, and {@link StreamsSchedulerFactory#createScheduler}. The
 * multilang module still parses the properties file and provides the processors.
 *
 * <p>Usage: {@code java -cp 'jars/*' replicator.kcl.DynamoDbStreamsMultiLangDaemon
 * --properties-file FILE}. Exit status: 0 after a clean stop, 1 when the scheduler or a
 * processor child fails (the multilang processor ends the JVM itself then), 143 after
 * SIGTERM, once the shutdown hook has let every child checkpoint.
 */
public final class DynamoDbStreamsMultiLangDaemon {
    private static final Logger LOG = LoggerFactory.getLogger(DynamoDbStreamsMultiLangDaemon.class);

    private DynamoDbStreamsMultiLangDaemon() {}

    public static void main(String[] args) {
        int status;
        try {
            status = run(LauncherSettings.propertiesFile(args));
        } catch (Throwable t) {
            LOG.error("The DynamoDB Streams daemon stopped on an error", t);
            status = 1;
        }
        System.exit(status);
    }

    static int run(String propertiesFile) throws Exception {
        LauncherSettings settings = LauncherSettings.load(propertiesFile);
        MultiLangDaemonConfig multiLang = new MultiLangDaemonConfig(propertiesFile);
        Scheduler scheduler = scheduler(settings, multiLang.getRecordProcessorFactory());

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
        long graceMillis = settings.shutdownGraceMillis();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> stopGracefully(scheduler, graceMillis), "shutdown"));
        LOG.info(
                "Reading {} as application {} (worker {})",
                settings.streamArn(),
                settings.applicationName(),
                settings.workerId());
        worker.start();
        worker.join();
        return failed.get() ? 1 : 0;
    }

    /** On SIGTERM: each child gets shutdownRequested and checkpoints; then leases go. */
    private static void stopGracefully(Scheduler scheduler, long graceMillis) {
        LOG.info("Process terminated; shutting down gracefully (up to {} ms)", graceMillis);
        try {
            scheduler.startGracefulShutdown().get(graceMillis, TimeUnit.MILLISECONDS);
            LOG.info("Graceful shutdown complete");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ExecutionException | TimeoutException e) {
            LOG.error("Graceful shutdown did not complete", e);
        }
    }

    static Scheduler scheduler(LauncherSettings settings, ShardRecordProcessorFactory multiLangProcessors) {
        Region region = Region.of(settings.region());
        AwsCredentialsProvider credentials = DefaultCredentialsProvider.builder().build();

        AmazonDynamoDBStreamsAdapterClient adapterClient;
        if (settings.streamsEndpoint().isPresent()) {
            DynamoDbStreamsClientBuilder streams =
                    DynamoDbStreamsClient.builder().region(region).credentialsProvider(credentials);
            streams.endpointOverride(settings.streamsEndpoint().get());
            adapterClient = new AmazonDynamoDBStreamsAdapterClient(streams.build(), region);
        } else {
            // The adapter's own client, with the retry policy it recommends.
            adapterClient = new AmazonDynamoDBStreamsAdapterClient(credentials, region);
        }
        adapterClient.setSkipRecordsBehavior(settings.skipRecordsBehavior());

        DynamoDbAsyncClientBuilder dynamoDb =
                DynamoDbAsyncClient.builder().region(region).credentialsProvider(credentials);
        settings.dynamoDbEndpoint().ifPresent(dynamoDb::endpointOverride);
        CloudWatchAsyncClient cloudWatch = CloudWatchAsyncClient.builder()
                .region(region)
                .credentialsProvider(credentials)
                .build();

        StreamTracker stream = StreamsSchedulerFactory.createSingleStreamTracker(
                settings.streamArn(), InitialPositionInStreamExtended.newInitialPosition(settings.initialPosition()));
        ShardRecordProcessorFactory processors = new ShardRecordProcessorFactory() {
            @Override
            public ShardRecordProcessor shardRecordProcessor() {
                return new MultiLangStreamsProcessor(multiLangProcessors.shardRecordProcessor());
            }
        };
        ConfigsBuilder configs = new ConfigsBuilder(
                stream,
                settings.applicationName(),
                adapterClient,
                dynamoDb.build(),
                cloudWatch,
                settings.workerId(),
                processors);

        LeaseManagementConfig leases = configs.leaseManagementConfig();
        leases.failoverTimeMillis(settings.failoverTimeMillis());
        settings.shardSyncIntervalMillis().ifPresent(millis -> leases.shardSyncIntervalMillis(millis));
        settings.maxLeasesForWorker().ifPresent(count -> leases.maxLeasesForWorker(count));
        settings.maxLeasesToStealAtOneTime().ifPresent(count -> leases.maxLeasesToStealAtOneTime(count));

        CoordinatorConfig coordinator = configs.coordinatorConfig();
        settings.parentShardPollIntervalMillis().ifPresent(millis -> coordinator.parentShardPollIntervalMillis(millis));

        ProcessorConfig processor = configs.processorConfig();
        processor.callProcessRecordsEvenForEmptyRecordList(settings.callProcessRecordsEvenForEmptyRecordList());

        MetricsConfig metrics = configs.metricsConfig();
        metrics.metricsLevel(settings.metricsLevel());
        if (settings.metricsLevel() == MetricsLevel.NONE) {
            metrics.metricsFactory(new NullMetricsFactory());
        }

        DynamoDBStreamsPollingConfig polling = new DynamoDBStreamsPollingConfig(settings.streamArn(), adapterClient);
        polling.idleTimeBetweenReadsInMillis(settings.idleTimeBetweenReadsMillis());
        polling.maxRecords(settings.maxRecords());
        RetrievalConfig retrieval = configs.retrievalConfig();
        retrieval.retrievalSpecificConfig(polling);

        return StreamsSchedulerFactory.createScheduler(
                configs.checkpointConfig(),
                coordinator,
                leases,
                configs.lifecycleConfig(),
                metrics,
                processor,
                retrieval,
                adapterClient);
    }
}
