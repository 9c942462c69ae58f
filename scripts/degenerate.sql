-- Stored valid results with a degenerate field: must return no row. Run it over any palate
-- database: sqlite3 out/demo.db < scripts/degenerate.sql
-- A field is degenerate when it is only a label word or a field name, a title is generic
-- ("Strength 1"), a detail repeats its title, two aspects share a summary, or a summary names most
-- of the prompt's aspect list.
WITH ok AS (SELECT restaurant_id, kind, result_json AS j FROM results WHERE status = 'ok'),
words(w) AS (VALUES ('positive'), ('negative'), ('mixed'), ('neutral'), ('summary'), ('aspects'),
                    ('strength'), ('strengths'), ('title'), ('detail'), ('evidence'), ('none'),
                    ('n/a'), ('...'), ('')),
fields AS (
  SELECT restaurant_id, 'summary' AS field, json_extract(j, '$.summary') AS text FROM ok WHERE kind = 'summary'
  UNION ALL
  SELECT restaurant_id, 'aspect ' || a.key, json_extract(a.value, '$.summary')
    FROM ok, json_each(ok.j, '$.aspects') a WHERE kind = 'summary'
  UNION ALL
  SELECT restaurant_id, 'title', json_extract(s.value, '$.title')
    FROM ok, json_each(ok.j, '$.strengths') s WHERE kind = 'strengths'
  UNION ALL
  SELECT restaurant_id, 'detail', json_extract(s.value, '$.detail')
    FROM ok, json_each(ok.j, '$.strengths') s WHERE kind = 'strengths'
)
SELECT restaurant_id, field, text, 'label word or field name' AS why FROM fields
  WHERE lower(trim(text, ' .!')) IN (SELECT w FROM words)
     OR lower(text) GLOB 'strength [0-9]*' OR lower(text) GLOB 'title [0-9]*'
UNION ALL
SELECT restaurant_id, 'detail', json_extract(s.value, '$.detail'), 'detail repeats its title'
  FROM ok, json_each(ok.j, '$.strengths') s
  WHERE kind = 'strengths' AND lower(json_extract(s.value, '$.detail')) = lower(json_extract(s.value, '$.title'))
UNION ALL
SELECT ok.restaurant_id, 'aspects ' || a.key || ', ' || b.key, json_extract(a.value, '$.summary'), 'identical aspect summaries'
  FROM ok, json_each(ok.j, '$.aspects') a, json_each(ok.j, '$.aspects') b
  WHERE kind = 'summary' AND a.key < b.key
    AND lower(json_extract(a.value, '$.summary')) = lower(json_extract(b.value, '$.summary'))
UNION ALL
SELECT restaurant_id, field, text, 'echoes the aspect list' FROM fields
  WHERE (instr(lower(text), 'food') > 0) + (instr(lower(text), 'service') > 0)
      + (instr(lower(text), 'price') > 0) + (instr(lower(text), 'ambience') > 0)
      + (instr(lower(text), 'wait') > 0) + (instr(lower(text), 'cleanliness') > 0)
      + (instr(lower(text), 'portion') > 0) + (instr(lower(text), 'location') > 0) >= 5;
