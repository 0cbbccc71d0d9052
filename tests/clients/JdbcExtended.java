// pgjdbc at its default settings (preferQueryMode=extended) for the extended-protocol tests
// (tests/integration/test_extended_clients_jvm_node.py).
//
// Usage: java -cp /usr/share/java/postgresql.jar:DIR JdbcExtended JDBC_URL SECOND_SQL
//
// Expects a table jdbc_ext (id int primary key, v text) that the test created. Prints one line
// per observation:
//   prepared <v1> ... <v7>        (one PreparedStatement run 7 times: server-prepared after
//                                  prepareThreshold=5 runs)
//   server_prepared <bool>        (pgjdbc's own view of the statement after those runs)
//   batch <rows> <count>          (executeBatch of 500 inserts: rows reported, rows stored)
//   error <sqlstate>              (select 1/0)
//   multi_error <sqlstate>        ("insert ...; SECOND_SQL": one P/B/E per statement, one Sync)
//   multi_after <count>           (whether that insert is stored)
//   fetch <rows> <sqlstate|none>  (setFetchSize(100) with autocommit off: portal fetches)
//   tables <names>                (DatabaseMetaData.getTables)
//   columns <name:type>...        (DatabaseMetaData.getColumns)
//   done
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class JdbcExtended {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            prepared(c);
            batch(c);
            errors(c, args[1]);
            fetch(c);
            metadata(c);
            System.out.println("done");
        }
    }

    static void prepared(Connection c) throws SQLException {
        StringBuilder sb = new StringBuilder("prepared");
        try (PreparedStatement ps = c.prepareStatement("select ?::int * 3")) {
            for (int i = 1; i <= 7; i++) {
                ps.setInt(1, i);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    sb.append(' ').append(rs.getInt(1));
                }
            }
            System.out.println(sb);
            System.out.println("server_prepared "
                               + ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare());
        }
    }

    static int count(Connection c, String where) throws SQLException {
        try (Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("select count(*) from jdbc_ext " + where)) {
            rs.next();
            return rs.getInt(1);
        }
    }

    static void batch(Connection c) throws SQLException {
        int reported = 0;
        try (PreparedStatement ps = c.prepareStatement("insert into jdbc_ext values (?, ?)")) {
            for (int i = 0; i < 500; i++) {
                ps.setInt(1, i);
                ps.setString(2, "v" + i);
                ps.addBatch();
            }
            for (int n : ps.executeBatch())
                reported += n;
        }
        System.out.println("batch " + reported + " " + count(c, ""));
    }

    static String state(SQLException e) {
        return e.getSQLState();
    }

    static void errors(Connection c, String second) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.executeQuery("select 1/0");
            System.out.println("error none");
        } catch (SQLException e) {
            System.out.println("error " + state(e));
        }
        try (Statement st = c.createStatement()) {
            st.execute("insert into jdbc_ext values (9999, 'multi'); " + second);
            System.out.println("multi_error none");
        } catch (SQLException e) {
            System.out.println("multi_error " + state(e));
        }
        System.out.println("multi_after " + count(c, "where id = 9999"));
    }

    static void fetch(Connection c) throws SQLException {
        c.setAutoCommit(false);
        int n = 0;
        String err = "none";
        try (Statement st = c.createStatement()) {
            st.setFetchSize(100);
            try (ResultSet rs = st.executeQuery("select g from generate_series(1, 2500) g")) {
                while (rs.next())
                    n++;
            }
        } catch (SQLException e) {
            err = state(e);
        }
        c.rollback();
        c.setAutoCommit(true);
        System.out.println("fetch " + n + " " + err);
    }

    static void metadata(Connection c) throws SQLException {
        DatabaseMetaData md = c.getMetaData();
        StringBuilder sb = new StringBuilder("tables");
        try (ResultSet rs = md.getTables(null, "public", "jdbc_ext", new String[] {"TABLE"})) {
            while (rs.next())
                sb.append(' ').append(rs.getString("TABLE_NAME"));
        }
        System.out.println(sb);
        sb = new StringBuilder("columns");
        try (ResultSet rs = md.getColumns(null, "public", "jdbc_ext", null)) {
            while (rs.next())
                sb.append(' ').append(rs.getString("COLUMN_NAME")).append(':')
                    .append(rs.getString("TYPE_NAME"));
        }
        System.out.println(sb);
    }
}
