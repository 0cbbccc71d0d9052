// A small JDBC client for the client-compatibility tests (tests/integration/test_clients.py).
//
// Usage: java -cp /usr/share/java/postgresql.jar:DIR JdbcClient JDBC_URL [script|extended]
//
// "script" (the default) runs the compatibility script and prints one line per observation:
//   connected <product version>
//   row <n> <text>                  (multi-row query)
//   error <sqlstate> <message>      (select 1/0)
//   tx_error_then <sqlstate>        (a statement after an error in a transaction: 25P02)
//   count_after_rollback <n>
//   count_after_commit <n>
//   cancel <sqlstate> <ms>          (Statement.cancel() from another thread)
//   done
// "extended" (for the default preferQueryMode=extended) prints "connect_error <sqlstate> <message>"
// when the connection itself fails (pgjdbc's setup query uses the extended protocol), else runs
// one PreparedStatement and prints "extended_error <sqlstate> <message>", then shows the session
// is still usable: "after_extended_error <sqlstate>" from a plain Statement, which in extended
// mode uses Parse/Bind/Execute as well.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class JdbcClient {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        String mode = args.length > 1 ? args[1] : "script";
        watchUrl = url;
        Connection conn;
        try {
            conn = DriverManager.getConnection(url);
        } catch (SQLException e) {
            if (!mode.equals("extended"))
                throw e;
            // pgjdbc's default mode runs its setup query (SET extra_float_digits = 3) with
            // Parse/Bind/Execute, so the proxy's 0A000 already arrives at connect time.
            System.out.println("connect_error " + e.getSQLState() + " " + oneLine(e));
            System.out.println("done");
            return;
        }
        try (Connection c = conn) {
            System.out.println("connected " + c.getMetaData().getDatabaseProductVersion());
            if (mode.equals("extended")) {
                extended(c);
            } else {
                rowsAndError(c);
                transactions(c);
                cancel(c);
            }
            System.out.println("done");
        }
    }

    static void extended(Connection c) {
        try (PreparedStatement ps = c.prepareStatement("select ?::int + 1")) {
            ps.setInt(1, 41);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                System.out.println("extended_ok " + rs.getInt(1));
            }
        } catch (SQLException e) {
            System.out.println("extended_error " + e.getSQLState() + " " + oneLine(e));
        }
        // In extended mode a plain Statement uses the extended protocol as well; print what
        // it gets, so the test can tell "error" from "connection broken".
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("select 7")) {
            rs.next();
            System.out.println("after_extended " + rs.getInt(1));
        } catch (SQLException e) {
            System.out.println("after_extended_error " + e.getSQLState());
        }
    }

    static String oneLine(SQLException e) {
        String m = e.getMessage();
        int nl = m.indexOf('\n');
        return nl < 0 ? m : m.substring(0, nl);
    }

    static void rowsAndError(Connection c) throws SQLException {
        try (Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("select g, 'row ' || g from generate_series(1, 5) g")) {
            while (rs.next())
                System.out.println("row " + rs.getInt(1) + " " + rs.getString(2));
        }
        try (Statement st = c.createStatement()) {
            st.executeQuery("select 1/0");
            System.out.println("error none");
        } catch (SQLException e) {
            System.out.println("error " + e.getSQLState() + " " + oneLine(e));
        }
    }

    static int count(Connection c) throws SQLException {
        try (Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("select count(*) from jdbc_t")) {
            rs.next();
            return rs.getInt(1);
        }
    }

    static void transactions(Connection c) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute("create temp table jdbc_t (x int)");
            c.setAutoCommit(false);
            st.execute("insert into jdbc_t values (1)");
            try {
                st.execute("select 1/0");
            } catch (SQLException e) {
                // expected: the transaction is now failed
            }
            try {
                st.execute("select 1");
                System.out.println("tx_error_then none");
            } catch (SQLException e) {
                System.out.println("tx_error_then " + e.getSQLState());
            }
            c.rollback();
            c.setAutoCommit(true);
            System.out.println("count_after_rollback " + count(c));
            c.setAutoCommit(false);
            st.execute("insert into jdbc_t values (1), (2)");
            c.commit();
            c.setAutoCommit(true);
            System.out.println("count_after_commit " + count(c));
        }
    }

    static void cancel(Connection c) throws Exception {
        String tag = "jdbc_client_" + ProcessHandle.current().pid();
        try (Statement st = c.createStatement()) {
            Thread canceller = new Thread(() -> {
                try {
                    waitActive(c, tag);
                    long start = System.nanoTime();
                    st.cancel();
                    startedAt[0] = start;
                } catch (Exception e) {
                    System.err.println("cancel thread: " + e);
                }
            });
            canceller.start();
            String state = "none";
            try {
                st.execute("select pg_sleep(30) /* " + tag + " */");
            } catch (SQLException e) {
                state = e.getSQLState();
            }
            long end = System.nanoTime();
            canceller.join();
            long ms = startedAt[0] == 0 ? -1 : (end - startedAt[0]) / 1000000;
            System.out.println("cancel " + state + " " + ms);
        }
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("select 1")) {
            rs.next(); // the session is still usable after the cancel
        }
    }

    static final long[] startedAt = {0};
    static String watchUrl;

    // Watches pg_stat_activity from a second connection until the statement runs upstream.
    static void waitActive(Connection c, String tag) throws Exception {
        try (Connection w = DriverManager.getConnection(watchUrl);
             Statement st = w.createStatement()) {
            for (int i = 0; i < 200; i++) {
                try (ResultSet rs = st.executeQuery(
                         "select 1 from pg_stat_activity where state = 'active' and query like '%"
                         + tag + "%' and pid <> pg_backend_pid()")) {
                    if (rs.next())
                        return;
                }
                Thread.sleep(50);
            }
        }
        throw new IllegalStateException("statement " + tag + " never became active");
    }
}
