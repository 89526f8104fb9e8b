package replicator.kcl;

import com.amazonaws.services.dynamodbv2.streamsadapter.model.DynamoDBStreamsProcessRecordsInput;
import com.amazonaws.services.dynamodbv2.streamsadapter.processor.DynamoDBStreamsShardRecordProcessor;
import java.util.ArrayList;
import java.util.List;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.retrieval.KinesisClientRecord;

/**
 * The multilang record processor (one Python child per shard), presented as the
 * DynamoDB Streams processor type the adapter's scheduler insists on. Every call goes to
 * the multilang processor unchanged: the records the adapter delivers are Kinesis client
 * records whose data is the stream record as JSON, which is what the child decodes.
 */
final class MultiLangStreamsProcessor implements DynamoDBStreamsShardRecordProcessor {
    private final ShardRecordProcessor multiLang;

    MultiLangStreamsProcessor(ShardRecordProcessor multiLang) {
        this.multiLang = multiLang;
    }

    @Override
    public void initialize(InitializationInput initializationInput) {
        multiLang.initialize(initializationInput);
    }

    /** The scheduler calls this one; the interface's default would convert and come back. */
    @Override
    public void processRecords(ProcessRecordsInput processRecordsInput) {
        multiLang.processRecords(processRecordsInput);
    }

    @Override
    public void processRecords(DynamoDBStreamsProcessRecordsInput input) {
        List<KinesisClientRecord> records = new ArrayList<>(input.records());
        multiLang.processRecords(ProcessRecordsInput.builder()
                .records(records)
                .checkpointer(input.checkpointer())
                .cacheEntryTime(input.cacheEntryTime())
                .cacheExitTime(input.cacheExitTime())
                .millisBehindLatest(input.millisBehindLatest())
                .childShards(input.childShards())
                .isAtShardEnd(input.isAtShardEnd())
                .build());
    }

    @Override
    public void leaseLost(LeaseLostInput leaseLostInput) {
        multiLang.leaseLost(leaseLostInput);
    }

    @Override
    public void shardEnded(ShardEndedInput shardEndedInput) {
        multiLang.shardEnded(shardEndedInput);
    }

    @Override
    public void shutdownRequested(ShutdownRequestedInput shutdownRequestedInput) {
        multiLang.shutdownRequested(shutdownRequestedInput);
    }
}
