// Java Avro's Parsing Canonical Form and CRC-64-AVRO fingerprint of Avro schema files: the
// reference values that test/vectors/schema_fingerprints.json pins (tools/schema_fingerprints.py
// runs this and checks it against fastavro).
//
//   java -cp "$(avro class path)" tools/fingerprints/SchemaFingerprints.java FILE.avsc...
//
// Prints one line per file: path, TAB, the fingerprint as the 8 bytes of the single-object header
// (little-endian) in hex, TAB, the Parsing Canonical Form. Each file is parsed on its own (a fresh
// Schema.Parser), so two versions of one schema do not clash.
import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;

public class SchemaFingerprints {
    public static void main(String[] args) throws Exception {
        for (String path : args) {
            Schema schema = new Schema.Parser().parse(Files.readString(Path.of(path)));
            long fingerprint = SchemaNormalization.parsingFingerprint64(schema);
            // Single-object encoding writes the long little-endian; print those bytes in order.
            String wire = String.format("%016x", Long.reverseBytes(fingerprint));
            System.out.println(path + "\t" + wire + "\t" + SchemaNormalization.toParsingForm(schema));
        }
    }
}
