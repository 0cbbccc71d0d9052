-- String literals read with standard_conforming_strings on and off, as a client sees them.
-- Run through the proxy (with and without a policy) and straight to PostgreSQL: the output
-- must be the same, errors included.
show standard_conforming_strings;
select 'plain' as a, 'it''s' as b, 'back\slash' as c, E'tab\there' as d, $$dollar\'$$ as e;
select 'C:\temp\new' as path, length('C:\temp\new') as n;
select 'first'
       ' second' as continued;
set escape_string_warning = off;
set standard_conforming_strings = off;
show standard_conforming_strings;
select 'it\'s' as a, 'back\\slash' as b, 'line\nbreak' as c, E'tab\there' as d;
select 'a\bcd' as f1, 'a\b''cd' as f2, 'abcd\\' as f3;
select U&'d\0061t\+000061' as u;
select length('\x41\102') as n, '\x41\102' as v;
create temp table scs_t (v text);
insert into scs_t values ('one\'two'), ('three\\four'), (E'five\'six'), ('seven''eight');
select v, length(v) from scs_t order by 1;
create function scs_f(text) returns text language plpgsql
  as 'begin return ''<'' || $1 || ''\\>''; end';
select scs_f('x\'y');
create function scs_g(text) returns text language plpgsql
  as $body$begin return '[' || $1 || ']'; end$body$;
select scs_g('p\'q');
reset standard_conforming_strings;
show standard_conforming_strings;
select v, length(v) from scs_t order by 1;
select scs_f('x''y'), scs_g('p\q');
set standard_conforming_strings = on;
select 'a\bcd' as f1, 'a\b''cd' as f2, 'a\b''''cd' as f3, 'abcd\'   as f4, 'ab\''cd' as f5, '\\' as f6;
set standard_conforming_strings = off;
select 'a\\bcd' as f1, 'a\\b\'cd' as f2, 'a\\b\'''cd' as f3, 'abcd\\'   as f4, 'ab\\\'cd' as f5, '\\\\' as f6;
select set_config('standard_conforming_strings', 'on', false);
select 'back\slash' as c;
set escape_string_warning = on;
set standard_conforming_strings = off;
select 'warn\'ed' as w;
reset standard_conforming_strings;
drop function scs_f(text);
drop function scs_g(text);
